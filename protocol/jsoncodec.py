"""The one JSON codec of the gateway: strict RFC 8259 in, compact UTF-8 out (orjson).

- `loads(raw)`: str or bytes in, a Python value out. Strict: `NaN`, `Infinity`,
  numbers that overflow a double, invalid UTF-8 and lone surrogates raise
  `ValueError` (orjson's `JSONDecodeError` is one), so nothing non-standard gets
  in to be echoed back to clients whose parsers would reject it.
- `dumps(value)`: a value in, compact JSON bytes out (non-ASCII kept as UTF-8; a
  NaN or infinite float, which cannot enter through `loads`, is written as `null`).
  Raises `TypeError` for what JSON cannot hold (e.g. an int beyond 64 bits).
- `dumps_text(value)`: the same as `str`, for websocket text frames.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def loads(raw: str | bytes | bytearray | memoryview) -> Any:
    """Strict JSON text in, its value out; `ValueError` for anything RFC 8259 rejects."""
    return orjson.loads(raw)


def dumps(value: Any) -> bytes:
    """A JSON-ready value in, compact UTF-8 JSON bytes out."""
    return orjson.dumps(value)


def dumps_text(value: Any) -> str:
    """A JSON-ready value in, compact JSON text out."""
    return orjson.dumps(value).decode("utf-8")
