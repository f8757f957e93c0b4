"""The embedding routers of a running gateway, built from its config.

`EmbeddingService(session, scheduler)` flows config in (`routers_for(config)`)
and `EmbeddingRouter`s out. It follows config reloads lazily: when the running
config's `routers.embedding` differs from the one its routers were built from,
the next lookup builds routers for the changed and added blocks (unchanged
routers keep their providers and health) and drops the removed ones. Replaced
providers are closed at shutdown (`aclose`), since requests may still hold them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp
from reactivex import abc

from config.models import EmbeddingModelConfig, EmbeddingRouterConfig, SluiceConfig
from observability.logs import safe_extra
from operators.scheduling import seconds
from pipelines.embed_router import EmbeddingRouter
from providers.embed_registry import build_embedding_provider
from providers.embed_types import EmbeddingProvider
from routing import build_strategy
from routing.router import HealthShare, build_model_router

log = logging.getLogger("sluice.embedding")

ProviderFactory = Callable[[EmbeddingModelConfig, aiohttp.ClientSession], EmbeddingProvider]


class EmbeddingService:
    """Every embedding router of one process, and every provider it built."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        scheduler: abc.SchedulerBase,
        factory: ProviderFactory = build_embedding_provider,
        share: HealthShare | None = None,
    ) -> None:
        self._share = share
        self._session = session
        self._scheduler = scheduler
        self._factory = factory
        self._built_from: list[EmbeddingRouterConfig] | None = None
        self._routers: dict[str, EmbeddingRouter] = {}
        self._providers: list[EmbeddingProvider] = []

    def routers_for(self, config: SluiceConfig) -> dict[str, EmbeddingRouter]:
        """The routers of `config`'s enabled embedding routers, by id (built on first
        use, rebuilt where the config changed since)."""
        if self._built_from is not config.routers.embedding:
            self._rebuild(config)
        return self._routers

    def _rebuild(self, config: SluiceConfig) -> None:
        old = self._routers
        routers: dict[str, EmbeddingRouter] = {}
        for router_config in config.embedding_routers:
            kept = old.get(router_config.id)
            if kept is not None and kept.config == router_config:
                routers[router_config.id] = kept
            else:
                routers[router_config.id] = self._build(router_config)
        self._routers = routers
        self._built_from = config.routers.embedding

    def _build(self, router_config: EmbeddingRouterConfig) -> EmbeddingRouter:
        models = router_config.enabled_models
        built = {m.id: self._factory(m, self._session) for m in models}
        self._providers.extend(built.values())
        health = build_model_router(
            f"embed:{router_config.id}",
            models,
            build_strategy(router_config.strategy, models),
            seconds(self._scheduler),
            _health_event(router_config.id),
            self._share,
        )
        return EmbeddingRouter(router_config, built, health, random.Random(), self._scheduler)

    def trackers(self) -> list[Any]:
        """The health trackers of the routers built so far (a config reload re-enables
        their models disabled by a 401/403, as it does the other routers')."""
        return [router.health for router in self._routers.values()]

    async def aclose(self) -> None:
        """Close every provider this service built."""
        await asyncio.gather(*(p.aclose() for p in self._providers), return_exceptions=True)


def _health_event(router_id: str) -> Callable[[str, dict[str, Any]], None]:
    def on_event(event: str, fields: dict[str, Any]) -> None:
        log.error(event, extra=safe_extra({"router": router_id, "endpoint": "embed", **fields}))

    return on_event
