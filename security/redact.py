"""Keep secrets out of everything Sluice writes.

`config_secrets(config)` collects every secret value in a config (each
`SecretStr`: provider API keys, AWS credentials); a `Redactor` built from them
replaces any occurrence with `***`. Log lines, error frames, HTTP error bodies
and crash reports pass through one, as a second line of defence behind the
provider adapters' own redaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, SecretStr

MASK = "***"
MIN_SECRET_CHARS = 4


def _walk(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        if secret:
            yield secret
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)


def config_secrets(config: BaseModel) -> list[str]:
    """Every non-empty `SecretStr` value anywhere in `config`."""
    return sorted(set(_walk(config)))


class Redactor:
    """Text in, the same text with each known secret replaced by `***` out.

    Secrets shorter than 4 characters are ignored (masking them would garble
    ordinary text and protects nothing).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        kept = {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
        self._secrets = sorted(kept, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        """`text` with every secret masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
