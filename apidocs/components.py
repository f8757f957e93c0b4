"""Pydantic models -> JSON Schemas placed in a document's `components.schemas`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF_TEMPLATE = "#/components/schemas/{model}"
"""Where every schema lives in both documents."""


def component_schemas(
    models: Sequence[type[BaseModel]],
) -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """Models in -> (a `$ref` object for each model, every schema by name).

    Schemas are the validation-mode ones (what a client may send, or what a
    frame validated against the model may hold); nested models become their own
    components, referenced with `REF_TEMPLATE`.
    """
    keys, top = models_json_schema(
        [(model, "validation") for model in models], ref_template=REF_TEMPLATE
    )
    refs = {model: dict(keys[(model, "validation")]) for model in models}
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    return refs, schemas
