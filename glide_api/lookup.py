"""What a handler looks up from its request: the caller and the chat router."""

from __future__ import annotations

from aiohttp import web

from gateway.core import GATEWAY
from glide_api.errors import error_response
from pipelines.chat_router import ChatRouter
from protocol.frames import ErrorName
from security.access import CLIENT, Client


def caller(request: web.Request) -> Client:
    """A request in; the caller the access middleware admitted (its key, limits, routers)."""
    return request[CLIENT]


def chat_router(request: web.Request) -> ChatRouter | web.Response:
    """A request in; the chat router its `{router}` names, or a 404 `router_not_found`."""
    router_id = request.match_info["router"]
    router = request.app[GATEWAY].chat_routers.get(router_id)
    if router is None:
        return error_response(404, ErrorName.ROUTER_NOT_FOUND, f"router {router_id!r} is not found")
    return router
