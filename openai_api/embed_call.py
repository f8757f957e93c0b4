"""One embedding request through a router, shared by both embedding surfaces.

`run_embedding(request, gateway, service, router_id, pinned, body, endpoint)`:
the gate (drain, key's routers, key's rate, in-flight count), the body checked
against the router, the router's failover, telemetry; an `Embeddings` out or an
`ApiError` (404 unknown router or model, 400 bad input or a capability no model
has, 429, 503 when every model failed).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiohttp import web

from observability.telemetry import ABORTED, ERROR, OK, REJECTED, Telemetry
from openai_api.embed_body import EmbedBody, embed_request
from openai_api.errors import MODEL_NOT_FOUND, ApiError, from_failure
from openai_api.gate import accepting, allowed, authenticated, in_flight, take_request
from openai_api.types import GatewayView
from operators.aio import to_future
from pipelines.embed_router import (
    UNSUPPORTED_CAPABILITY,
    CapabilityUnavailable,
    EmbeddingRouter,
    Embeddings,
)
from pipelines.embed_service import EmbeddingService
from protocol.frames import ErrorName

log = logging.getLogger("sluice.embedding")

EMBEDDING = web.AppKey("embedding_service", EmbeddingService)
"""Where the app keeps its `EmbeddingService`."""


def find_router(
    gateway: GatewayView, service: EmbeddingService, router_id: str, pinned: str | None
) -> EmbeddingRouter:
    """The embedding router `router_id` (and, when pinned, its model), or a 404."""
    routers = service.routers_for(gateway.config)
    router = routers.get(router_id)
    if router is None:
        known = ", ".join(sorted(routers)) or "none"
        raise ApiError(
            404,
            f"no embedding router {router_id!r} (use one of: {known})",
            code=ErrorName.ROUTER_NOT_FOUND,
            param="model",
        )
    if pinned is not None and not router.has_model(pinned):
        raise ApiError(
            404,
            f"embedding router {router_id!r} has no enabled model {pinned!r}",
            code=MODEL_NOT_FOUND,
            param="model",
        )
    return router


async def run_embedding(
    request: web.Request,
    gateway: GatewayView,
    router: EmbeddingRouter,
    pinned: str | None,
    body: EmbedBody,
    endpoint: str,
) -> Embeddings:
    """`body` embedded by `router` (pinned to one model or not), behind the gate."""
    client = authenticated(request)
    accepting(gateway)
    allowed(client, router.id)
    embed = embed_request(body, router.config)
    await take_request(client, gateway)
    telemetry = gateway.telemetry or Telemetry(gateway.clock)
    tracked = telemetry.request(
        endpoint, router.id, f"embed-{uuid.uuid4().hex}", key_id=client.key_id
    )
    with in_flight(gateway):
        try:
            try:
                answers = router.embed(embed, telemetry=tracked, only_model=pinned)
            except CapabilityUnavailable as error:
                raise ApiError(
                    400, str(error), code=UNSUPPORTED_CAPABILITY, param=error.capability
                ) from None
            try:
                result = await to_future(answers, gateway.scheduler)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                api_error = from_failure(error, gateway.redact)
                if api_error.status == 500:
                    log.error(
                        "embedding failed",
                        exc_info=error,
                        extra={"router": router.id, "request_id": tracked.request_id},
                    )
                raise api_error from None
        except asyncio.CancelledError:
            tracked.finish(ABORTED)
            raise
        except ApiError as error:
            tracked.finish(REJECTED if error.status < 500 else ERROR, error=error.code)
            raise
    tracked.output()
    tracked.finish(OK)
    return result
