"""The browser playground's page: `/playground` redirects, `/playground/` serves it."""

from __future__ import annotations

from aiohttp import web

from playground import static_dir


async def playground_redirect(_: web.Request) -> web.Response:
    """`/playground` -> `/playground/`, so the page's relative asset paths resolve."""
    raise web.HTTPFound("/playground/")


async def playground_index(_: web.Request) -> web.FileResponse:
    """The browser playground (static files; it speaks the same websocket protocol)."""
    return web.FileResponse(static_dir() / "index.html")
