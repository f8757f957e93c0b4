"""Turn a pydantic `ValidationError` into the short message a typed error frame carries."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError) -> str:
    """A short, value-free description of what is wrong with a request body."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "invalid request: " + "; ".join(parts)
