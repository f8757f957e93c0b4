"""The metrics' view of a running gateway.

An aiohttp app in; `GatewayState` out, the `StateSource` the Prometheus gauges read
at scrape time: endpoints served, open sockets, each model's health, HTTP requests
in flight, draining.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiohttp import web

from gateway.core import GATEWAY, Gateway
from observability.metrics import ModelState, SocketState, StateSource
from openai_api.embed_call import EMBEDDING

log = logging.getLogger("sluice.server")


class GatewayState(StateSource):
    """The gauges' view of a running gateway: sockets, requests, queues, health."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def _gateway(self) -> Gateway | None:
        return self._app.get(GATEWAY)

    def endpoints(self) -> Iterable[tuple[str, str]]:
        """Every websocket endpoint served: chatStream per language router, speak/listen,
        converse and realtime per agent router."""
        gateway = self._gateway()
        if gateway is None:
            return []
        pairs = [("chatStream", router_id) for router_id in gateway.chat_routers]
        pairs += [(kind, rid) for rid, by_kind in gateway.speech.items() for kind in by_kind]
        pairs += [("converse", agent.id) for agent in gateway.config.agent_routers]
        pairs += [("realtime", agent.id) for agent in gateway.config.agent_routers]
        return pairs

    def sockets(self) -> Iterable[SocketState]:
        """Every open websocket."""
        gateway = self._gateway()
        if gateway is None:
            return []
        return [
            SocketState(s.endpoint, s.router_id, len(s.active), s.queue.queued_bytes)
            for s in list(gateway.sessions)
        ]

    def models(self) -> Iterable[ModelState]:
        """Each chat and embedding model's health, and each speech model's from its
        endpoint listing."""
        gateway = self._gateway()
        if gateway is None:
            return []
        now = gateway.clock()
        out: list[ModelState] = []
        for router in gateway.chat_routers.values():
            states = router.health.health_states(now)  # type: ignore[attr-defined]
            for model in router.config.enabled_models:
                provider = router.model_info(model.id).provider_id
                state = states.get(model.id, "")
                out.append(ModelState("chatStream", router.id, model.id, provider, state))
        embedding = self._app.get(EMBEDDING)
        if embedding is not None:
            for embedder in embedding.routers_for(gateway.config).values():
                states = embedder.health.health_states(now)  # type: ignore[attr-defined]
                for embed_model in embedder.models:
                    provider = embedder.provider(embed_model.id).provider_id
                    state = states.get(embed_model.id, "")
                    out.append(ModelState("embed", embedder.id, embed_model.id, provider, state))
        for router_id, by_kind in gateway.speech.items():
            for kind, endpoint in by_kind.items():
                try:
                    models = endpoint.describe(now).get("models", [])
                except Exception:  # a listing bug must not break the scrape
                    log.exception("describe failed", extra={"router": router_id, "endpoint": kind})
                    continue
                for model in models:
                    if isinstance(model, dict) and isinstance(model.get("health"), str):
                        out.append(
                            ModelState(
                                kind,
                                router_id,
                                str(model.get("id")),
                                str(model.get("provider")),
                                model["health"],
                            )
                        )
        return out

    def http_in_flight(self) -> int:
        """HTTP chat calls being answered."""
        gateway = self._gateway()
        return gateway.http_in_flight if gateway is not None else 0

    def draining(self) -> bool:
        """Whether the instance drains."""
        gateway = self._gateway()
        return gateway.draining if gateway is not None else False
