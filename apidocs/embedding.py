"""The embedding endpoints' part of the OpenAPI document (kept apart from the rest,
so a new surface is one call in `apidocs.openapi`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from openai_api.embed_body import EmbedBody
from openai_api.embed_native import NativeEmbedBody
from protocol.embed_schema import EmbeddingRouterList, EmbedResponse, OpenAIEmbeddingList

EMBEDDING_MODELS: tuple[type[BaseModel], ...] = (
    EmbedBody,
    NativeEmbedBody,
    EmbedResponse,
    OpenAIEmbeddingList,
    EmbeddingRouterList,
)
"""The models whose schemas the embedding paths reference."""

ERRORS = (
    "Errors: 400 `invalid_request`, `unsupported_input` (token ids), `too_many_inputs`, "
    "`input_too_long`, `unsupported_capability` (`dimensions` and no model supports it), "
    "`bad_request` (the vendor refused the input); 401 / 403; 404 unknown router or model; "
    "429 the key's rate; 503 every model failed (`all_models_unavailable`) or draining."
)


def embedding_paths(
    refs: dict[type[BaseModel], dict[str, Any]],
    glide_error: dict[str, Any],
    openai_error: dict[str, Any],
    bearer: list[dict[str, list[str]]],
) -> dict[str, Any]:
    """`/v1/embeddings`, `/v1/embedding/{router}/embed` and `/v1/embedding` paths."""

    def body(model: type[BaseModel]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": refs[model]}}}

    def ok(model: type[BaseModel], description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": refs[model]}},
        }

    def errors(ref: dict[str, Any], *codes: str) -> dict[str, Any]:
        described = {
            "description": "An error (the `name` / `code` says which).",
            "content": {"application/json": {"schema": ref}},
        }
        return {code: described for code in codes}

    codes = ("400", "401", "403", "404", "413", "429", "503")
    return {
        "/v1/embeddings": {
            "post": {
                "operationId": "createEmbedding",
                "summary": "OpenAI-compatible embeddings over an embedding router",
                "description": "`model` names an embedding router (or `router/model-id`). "
                "The texts are split by each vendor's batch limit, sent in parallel and "
                "returned in order; a failed model fails over to the next model of the same "
                f"vector space, so every vector of an answer comes from one model. {ERRORS}",
                "tags": ["openai"],
                "security": bearer,
                "requestBody": body(EmbedBody),
                "responses": {
                    "200": ok(OpenAIEmbeddingList, "The vectors, `index` in input order."),
                    **errors(openai_error, *codes),
                },
            }
        },
        "/v1/embedding/{router}/embed": {
            "post": {
                "operationId": "embed",
                "summary": "Embed texts with failover (Sluice's shape)",
                "description": f"`model_id` pins one model of the router. {ERRORS}",
                "tags": ["embedding"],
                "security": bearer,
                "parameters": [
                    {
                        "name": "router",
                        "in": "path",
                        "required": True,
                        "description": "An embedding router's id.",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": body(NativeEmbedBody),
                "responses": {
                    "200": ok(EmbedResponse, "The vectors in input order."),
                    **errors(glide_error, *codes),
                },
            }
        },
        "/v1/embedding": {
            "get": {
                "operationId": "listEmbeddingRouters",
                "summary": "Embedding routers, their models, vector spaces and health",
                "tags": ["embedding"],
                "security": bearer,
                "responses": {
                    "200": ok(EmbeddingRouterList, "The routers this key may use."),
                    **errors(glide_error, "401", "403"),
                },
            }
        },
    }
