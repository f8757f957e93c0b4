"""Routers and endpoints from a config.

`build_chat_routers`: config + HTTP session + scheduler + provider factory -> chat
routers by id and every provider built (health shared through state.redis when
given). `build_speech_endpoints`: config + build context -> the speak / listen
endpoints of each speech router, their engines imported only when used.
"""

from __future__ import annotations

import importlib
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp
from reactivex import abc

from config import SluiceConfig
from config.models import SpeechRouterConfig
from gateway.core import ProviderFactory
from observability.logs import safe_extra
from operators.scheduling import seconds
from pipelines.chat_router import ChatRouter
from pipelines.endpoint import BuildContext, SocketEndpoint
from providers.types import ChatProvider
from routing.router import ModelRouter
from routing.strategies import build_strategy
from state.health import SharedHealth

log = logging.getLogger("sluice.server")


def build_chat_routers(
    config: SluiceConfig,
    session: aiohttp.ClientSession,
    scheduler: abc.SchedulerBase,
    factory: ProviderFactory,
    shared: SharedHealth | None = None,
) -> tuple[dict[str, ChatRouter], list[ChatProvider]]:
    """Config + HTTP session -> chat routers by id, and every provider built.

    With `shared` (state.redis) the routers' health verdicts are published to the
    other instances and theirs known so far are applied to the new routers."""
    routers: dict[str, ChatRouter] = {}
    providers: list[ChatProvider] = []
    now = seconds(scheduler)
    for router_config in config.language_routers:
        models = router_config.enabled_models
        built = {m.id: factory(m, session) for m in models}
        providers.extend(built.values())
        health = ModelRouter(
            router_config.id,
            models,
            build_strategy(router_config.strategy, models),
            now=now,
            on_event=(
                _health_event(router_config.id)
                if shared is None
                else shared.sink(router_config.id, _health_event(router_config.id))
            ),
        )
        if shared is not None:
            shared.adopt(router_config.id, health, models)
        routers[router_config.id] = ChatRouter(
            router_config, built, health, random.Random(), scheduler
        )
    return routers, providers


def _health_event(router_id: str) -> Callable[[str, dict[str, Any]], None]:
    def on_event(event: str, fields: dict[str, Any]) -> None:
        log.error(
            event, extra=safe_extra({"router": router_id, "endpoint": "chatStream", **fields})
        )

    return on_event


SpeechEndpointBuilder = Callable[[SpeechRouterConfig, BuildContext], SocketEndpoint]


SPEECH_ENDPOINTS = ("speak", "listen")
"""Each kind K is served by `pipelines.K.build_K_endpoint` (imported on first use)."""


def build_speech_endpoints(
    config: SluiceConfig, context: BuildContext
) -> dict[str, dict[str, SocketEndpoint]]:
    """Speech routers -> {router id: {"speak" | "listen": endpoint}}.

    Each endpoint's module is imported only when a router uses it, so a config
    without speech never loads the speech engines.
    """
    endpoints: dict[str, dict[str, SocketEndpoint]] = {}
    for router in config.speech_routers:
        built: dict[str, SocketEndpoint] = {}
        for kind in SPEECH_ENDPOINTS:
            if getattr(router, kind) is not None:
                module = importlib.import_module(f"pipelines.{kind}")
                builder: SpeechEndpointBuilder = getattr(module, f"build_{kind}_endpoint")
                built[kind] = builder(router, context)
        endpoints[router.id] = built
    return endpoints
