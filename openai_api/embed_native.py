"""Sluice's own embedding surface: `POST /v1/embedding/{router}/embed` and
`GET /v1/embedding/` (the routers and their models, with health).

Body in: `{"input": "text" | ["text", ...], "encoding_format"?, "dimensions"?,
"input_type"?, "model_id"?}` (`model_id` pins one model of the router). Answer:
`{"router_id", "model_id", "provider_id", "model_name", "dimensions",
"encoding_format", "embeddings": [vector | base64, ...], "usage": {"prompt_tokens",
"total_tokens"}}`. Errors are Glide's `{"name", "message"}` with the HTTP status.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import ConfigDict, Field

from openai_api.body import read_json
from openai_api.embed_body import EmbedBody, encode
from openai_api.embed_call import EMBEDDING, find_router, run_embedding
from openai_api.errors import ApiError, Handler
from openai_api.types import GatewayKey, GatewayView
from protocol.frames import ErrorName
from security.access import CLIENT
from transport.http_json import json_response

ENDPOINT = "embed"
"""The endpoint label of these requests in metrics and logs."""


class NativeEmbedBody(EmbedBody):
    """The native body: OpenAI's fields plus `model_id` to pin a model (the router is
    in the path, so `model` is ignored); unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str | None = Field(default=None, min_length=1)


def glide_errors(handler: Handler) -> Handler:
    """Wrap a handler so that an `ApiError` becomes Glide's `{name, message}` body."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return json_response(
                {"name": error.code or ErrorName.UNKNOWN_ERROR, "message": error.message},
                status=error.status,
                headers=error.headers,
            )
        except web.HTTPRequestEntityTooLarge:
            return json_response(
                {
                    "name": ErrorName.PAYLOAD_TOO_LARGE,
                    "message": "the request body is larger than the server accepts",
                },
                status=413,
            )

    return wrapped


def embed(gateway_key: GatewayKey) -> Handler:
    """The handler of `POST /v1/embedding/{router}/embed`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        gateway: GatewayView = request.app[gateway_key]
        service = request.app[EMBEDDING]
        router_id = request.match_info["router"]
        find_router(gateway, service, router_id, None)  # 404 before reading the body
        body = await read_json(request, NativeEmbedBody)
        router = find_router(gateway, service, router_id, body.model_id)
        result = await run_embedding(request, gateway, router, body.model_id, body, ENDPOINT)
        return json_response(
            {
                "router_id": router.id,
                "model_id": result.model_id,
                "provider_id": result.provider_id,
                "model_name": result.model_name,
                "dimensions": len(result.vectors[0]) if result.vectors else 0,
                "encoding_format": body.encoding_format,
                "embeddings": [encode(v, body.encoding_format) for v in result.vectors],
                "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
            }
        )

    return glide_errors(handle)


def list_routers(gateway_key: GatewayKey) -> Handler:
    """The handler of `GET /v1/embedding/`: routers a key may use, models, health."""

    async def handle(request: web.Request) -> web.StreamResponse:
        gateway: GatewayView = request.app[gateway_key]
        client = request[CLIENT]
        now = gateway.clock()
        out = []
        for router in request.app[EMBEDDING].routers_for(gateway.config).values():
            if not client.may_use(router.id):
                continue
            states = router.health.health_states(now)  # type: ignore[attr-defined]
            out.append(
                {
                    "id": router.id,
                    "strategy": router.config.strategy,
                    "interchangeable": router.config.interchangeable,
                    "models": [
                        {
                            "id": m.id,
                            "provider": m.provider_key,
                            "model_name": router.provider(m.id).model_name,
                            "space": m.vector_space,
                            "dimensions": m.dimensions,
                            "weight": m.weight,
                            "health": states.get(m.id),
                        }
                        for m in router.models
                    ],
                }
            )
        return json_response({"routers": out})

    return handle
