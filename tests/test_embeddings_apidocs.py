"""The OpenAPI document carries the embedding endpoints, and real answers of those
endpoints validate against the models its schemas come from (extra="forbid")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from openapi_spec_validator import validate as validate_openapi

from apidocs import build_openapi
from fakes.embed_servers import FakeEmbed, run_fake_embed
from protocol.embed_schema import EmbeddingRouterList, EmbedResponse, OpenAIEmbeddingList
from protocol.schema import GlideError, OpenAIError
from tests.embed_helpers import embed_config, embed_model
from tests.openai_sdk import MakeClient, openai_app_factory


@pytest.fixture
def sluice(aiohttp_client: Any) -> MakeClient:
    return openai_app_factory(aiohttp_client)


@pytest.fixture
async def fake() -> AsyncIterator[FakeEmbed]:
    async with run_fake_embed() as running:
        yield running


def test_openapi_has_the_embedding_endpoints_and_fields() -> None:
    document = build_openapi()
    validate_openapi(document)
    paths = document["paths"]
    for path in ("/v1/embeddings", "/v1/embedding/{router}/embed", "/v1/embedding"):
        assert path in paths
    schemas = document["components"]["schemas"]
    body = paths["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/EmbedBody"}
    fields = schemas["EmbedBody"]["properties"]
    for name in ("input", "model", "encoding_format", "dimensions", "input_type"):
        assert name in fields
    assert "model_id" in schemas["NativeEmbedBody"]["properties"]
    native = paths["/v1/embedding/{router}/embed"]["post"]["responses"]["200"]
    assert native["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EmbedResponse"
    }


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_real_answers_match_the_documented_models(
    sluice: MakeClient, fake: FakeEmbed, encoding: str
) -> None:
    client = await sluice(embed_config(embed_model("m", "gemini", fake, dimensions=8)))
    body = {"input": ["a", "b"], "encoding_format": encoding}
    native = await client.post("/v1/embedding/emb/embed", json=body)
    EmbedResponse.model_validate(await native.json())
    oai = await client.post("/v1/embeddings", json={"model": "emb", **body})
    OpenAIEmbeddingList.model_validate(await oai.json())
    listing = await client.get("/v1/embedding/")
    EmbeddingRouterList.model_validate(await listing.json())
    missing = await client.post("/v1/embedding/none/embed", json=body)
    GlideError.model_validate(await missing.json())
    bad = await client.post("/v1/embeddings", json={"model": "emb", "input": [1]})
    OpenAIError.model_validate(await bad.json())
