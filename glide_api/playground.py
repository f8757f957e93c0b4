"""The browser playground's routes: an app in, `/playground/...` added to it.

`/playground` redirects to `/playground/`, which serves the page; its static files
and the JavaScript client (`/playground/sluice-client/`) are served from their
directories only (aiohttp's static handler refuses paths that leave them).
"""

from __future__ import annotations

from aiohttp import web

from playground import client_dir, static_dir


async def playground_redirect(_: web.Request) -> web.Response:
    """`/playground` -> `/playground/`, so the page's relative asset paths resolve."""
    raise web.HTTPFound("/playground/")


async def playground_index(_: web.Request) -> web.FileResponse:
    """The browser playground (static files; it speaks the same websocket protocol)."""
    return web.FileResponse(static_dir() / "index.html")


def add_playground_routes(app: web.Application) -> None:
    """Add the playground's page, its static files and the JavaScript client to `app`."""
    app.router.add_get("/playground", playground_redirect)
    app.router.add_get("/playground/", playground_index)
    js_client = client_dir()
    if js_client is not None:
        app.router.add_static("/playground/sluice-client/", js_client)
    app.router.add_static("/playground/", static_dir())
