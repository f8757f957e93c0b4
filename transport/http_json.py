"""HTTP JSON bodies out through the gateway's one strict codec (`protocol.jsoncodec`).

A JSON-ready value (and a status, headers) flows in; an `application/json`
response flows out whose body cannot contain `NaN` or `Infinity` (orjson writes
them as `null`), so every client's parser accepts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from protocol import jsoncodec


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """`data` in, a strict-JSON `application/json` response with `status` out."""
    return web.Response(
        body=jsoncodec.dumps(data),
        status=status,
        headers=headers,
        content_type="application/json",
    )
