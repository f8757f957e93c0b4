"""Sluice's API documents, generated from the pydantic models the server validates with.

    build_openapi()  -> an OpenAPI 3.1 document (dict) for the HTTP endpoints
    build_asyncapi() -> an AsyncAPI 3.0 document (dict) for the websocket endpoints

The server builds both once per app and serves them at `OPENAPI_PATH`
(`/v1/openapi.json`) and `ASYNCAPI_PATH` (`/v1/asyncapi.json`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from apidocs.asyncapi import build_asyncapi
from apidocs.openapi import ASYNCAPI_PATH, OPENAPI_PATH, build_openapi

__all__ = ["ASYNCAPI_PATH", "OPENAPI_PATH", "build_asyncapi", "build_openapi", "document_handler"]


def document_handler(
    document: dict[str, Any],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A GET handler answering with `document` as JSON (serialized once, here)."""
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return handle
