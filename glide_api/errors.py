"""Glide's HTTP error shape.

`error_response(status, name, message)` -> a `{name, message}` JSON response;
`json_errors` (middleware) turns aiohttp's own 404/405/413/400 into that shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.core import CONFIG
from protocol.frames import ErrorName
from transport.http_json import json_response


def error_response(
    status: int, name: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Glide's HTTP error body `{name, message}`."""
    return json_response({"name": name, "message": message}, status=status, headers=headers)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown routes, wrong methods, oversized bodies and aiohttp's own 400s (a
    websocket route asked without an upgrade) answer in Glide's `{name, message}` shape."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return error_response(
            404, ErrorName.ROUTE_NOT_FOUND, "requested route is not found or method is not allowed"
        )
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413,
            ErrorName.PAYLOAD_TOO_LARGE,
            f"the request body is larger than {request.app[CONFIG].limits.text_frame_bytes} bytes",
        )
    except web.HTTPBadRequest as error:  # e.g. a websocket route without an upgrade
        return error_response(400, ErrorName.INVALID_REQUEST, error.text or "bad request")
