"""The JSON answers of the embedding endpoints, as models (the OpenAPI document's
schemas; tests validate real answers against them, so neither can drift)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Vector = list[float] | str
"""A vector: floats, or base64 of little-endian float32 (`encoding_format: base64`)."""


class EmbedUsage(BaseModel):
    """Tokens the vendor billed (0 when it does not say)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int
    total_tokens: int


class EmbedResponse(BaseModel):
    """`POST /v1/embedding/{router}/embed`: the vectors in input order, and their model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    router_id: str
    model_id: str
    provider_id: str
    model_name: str
    dimensions: int
    encoding_format: Literal["float", "base64"]
    embeddings: list[Vector]
    usage: EmbedUsage


class OpenAIEmbedding(BaseModel):
    """One item of `data` in OpenAI's embeddings answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: Literal["embedding"]
    index: int
    embedding: Vector


class OpenAIEmbeddingList(BaseModel):
    """`POST /v1/embeddings`: OpenAI's answer; `model` is `router/model-id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: Literal["list"]
    data: list[OpenAIEmbedding]
    model: str
    usage: EmbedUsage


class EmbeddingModelInfo(BaseModel):
    """One model in `GET /v1/embedding/` (never a secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    provider: str
    model_name: str
    space: str
    dimensions: int | None
    weight: float
    health: str | None


class EmbeddingRouterInfo(BaseModel):
    """One router in `GET /v1/embedding/`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    strategy: str
    interchangeable: bool
    models: list[EmbeddingModelInfo]


class EmbeddingRouterList(BaseModel):
    """`GET /v1/embedding/`: the embedding routers this key may use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routers: list[EmbeddingRouterInfo]
