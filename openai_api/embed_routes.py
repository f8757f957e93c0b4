"""Registers the embedding endpoints and their routers on a Sluice app.

`add_embedding_routes(app, GATEWAY)` adds `POST /v1/embeddings` (OpenAI's
shape), `POST /v1/embedding/{router}/embed` and `GET /v1/embedding/` (Sluice's),
and a cleanup context, run after the gateway's, that builds the
`EmbeddingService` on its own HTTP session and closes both at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from openai_api.embed_call import EMBEDDING
from openai_api.embed_native import embed, list_routers
from openai_api.embeddings import embeddings
from openai_api.types import GatewayKey
from pipelines.embed_service import EmbeddingService
from state.health import SHARED_HEALTH


def embedding_context(
    gateway_key: GatewayKey,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context building `app[EMBEDDING]` once `app[gateway_key]` exists."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        gateway: Any = app[gateway_key]
        # the gateway's upstream session (one pool); the gateway closes it after this
        service = EmbeddingService(
            gateway.upstream, gateway.scheduler, share=app.get(SHARED_HEALTH)
        )
        service.routers_for(gateway.config)
        app[EMBEDDING] = service
        try:
            yield
        finally:
            await service.aclose()

    return context


def add_embedding_routes(app: web.Application, gateway_key: GatewayKey) -> None:
    """Add the embedding endpoints; call after the gateway's cleanup context is added."""
    app.cleanup_ctx.append(embedding_context(gateway_key))
    app.router.add_post("/v1/embeddings", embeddings(gateway_key))
    app.router.add_post("/v1/embedding/{router}/embed", embed(gateway_key))
    app.router.add_get("/v1/embedding/", list_routers(gateway_key))
    app.router.add_get("/v1/embedding", list_routers(gateway_key))
