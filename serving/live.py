"""What an open websocket sees of a config reload.

- `following(routers, router)`: a chatStream socket's router that follows
  reloads. Each new request on the socket is answered by the router the gateway
  holds under that id when the request starts; a request already running keeps
  the router object it started with.
- `router_served(gateway, endpoint, router_id)`: whether the gateway still serves
  the socket's router; once a reload removed it, new requests on the socket are
  refused with `router_not_found` (see `pipelines.common.Admission`) while the
  running ones finish and the socket stays open.

speak and listen sockets keep the endpoint (models, voices, VAD) they were opened
with; a client reconnects to use a changed speech router.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from pipelines.chat_router import ChatRouter
from serving.reload import Swappable

CHAT_STREAM = "chatStream"
CONVERSE = "converse"


class FollowingRouter:
    """A stand-in for a `ChatRouter` that forwards every use to the gateway's
    current router of the same id (the last one seen once the id is gone)."""

    def __init__(self, routers: Callable[[], Mapping[str, ChatRouter]], first: ChatRouter) -> None:
        self.id = first.id
        self._routers = routers
        self._last = first

    def current(self) -> ChatRouter:
        """The router serving this id now."""
        router = self._routers().get(self.id)
        if router is not None:
            self._last = router
        return self._last

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)


def following(routers: Callable[[], Mapping[str, ChatRouter]], router: ChatRouter) -> ChatRouter:
    """The gateway's routers (a getter: reloads replace the mapping) and the socket's
    router in; a router that answers each new request with the current one out."""
    return cast(ChatRouter, FollowingRouter(routers, router))


def router_served(gateway: Swappable, endpoint: str, router_id: str) -> bool:
    """Whether `gateway` serves `endpoint` (chatStream, speak, listen) of `router_id`."""
    if endpoint == CHAT_STREAM:
        return router_id in gateway.chat_routers
    if endpoint == CONVERSE:
        return any(agent.id == router_id for agent in gateway.config.agent_routers)
    return endpoint in gateway.speech.get(router_id, {})
