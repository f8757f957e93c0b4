"""`POST /v1/embeddings`: OpenAI's embeddings API over a Sluice embedding router.

OpenAI body in (`model`: `router` or `router/model-id`, `input` a string or a
list of strings, `encoding_format` float | base64, `dimensions`) -> the router's
failover -> `{"object": "list", "data": [{"object": "embedding", "index",
"embedding"}], "model": "router/model-id", "usage": {"prompt_tokens",
"total_tokens"}}`. Errors are OpenAI's error objects.
"""

from __future__ import annotations

from aiohttp import web

from openai_api.body import read_json
from openai_api.chat_body import split_model
from openai_api.embed_body import EmbedBody, encode
from openai_api.embed_call import EMBEDDING, find_router, run_embedding
from openai_api.errors import ApiError, Handler, openai_errors
from openai_api.gate import authenticated
from openai_api.types import GatewayKey, GatewayView
from protocol.frames import ErrorName
from transport.http_json import json_response

ENDPOINT = "embeddings"
"""The endpoint label of these requests in metrics and logs."""


def embeddings(gateway_key: GatewayKey) -> Handler:
    """The handler of `POST /v1/embeddings` for the gateway at `app[gateway_key]`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        authenticated(request)
        gateway: GatewayView = request.app[gateway_key]
        body = await read_json(request, EmbedBody)
        if not body.model:
            raise ApiError(
                400,
                "model is required: the id of an embedding router",
                code=ErrorName.INVALID_REQUEST,
                param="model",
            )
        router_id, pinned = split_model(body.model)
        router = find_router(gateway, request.app[EMBEDDING], router_id, pinned)
        result = await run_embedding(request, gateway, router, pinned, body, ENDPOINT)
        encoding = body.encoding_format
        return json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": encode(v, encoding)}
                    for i, v in enumerate(result.vectors)
                ],
                "model": f"{router.id}/{result.model_id}",
                "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
            }
        )

    return openai_errors(handle)
