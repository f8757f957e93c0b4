"""The embedded default config embeds text with the local engine (llama.cpp's
embedding mode on the SmolLM2 weights of the `local` extra): no keys, no network."""

from __future__ import annotations

import math
from typing import Any

import pytest

from config import load_config
from tests.openai_sdk import openai_app_factory, sdk


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.mark.slow
async def test_the_embedded_default_embeds_with_the_local_engine(aiohttp_client: Any) -> None:
    config = load_config(None)
    [router] = config.embedding_routers
    assert router.id == "default"
    assert router.models[0].provider_key == "local"
    client = await openai_app_factory(aiohttp_client)(config)
    texts = ["The cat sat on the mat.", "A kitten rests on a rug.", "Bond yields rose sharply."]
    response = await client.post("/v1/embedding/default/embed", json={"input": texts})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["model_id"] == "local-smollm2-embed"
    assert body["provider_id"] == "local"
    assert body["dimensions"] == 576
    cat, kitten, bonds = body["embeddings"]
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-3 for v in (cat, kitten, bonds))
    # a real sentence model: the two sentences about a cat are nearer each other
    assert cosine(cat, kitten) > cosine(cat, bonds)
    assert cosine(cat, kitten) > cosine(kitten, bonds)
    assert body["usage"]["prompt_tokens"] > 0

    async with sdk(client) as oai:
        answer = await oai.embeddings.create(model="default", input=texts[0])
    assert answer.model == "default/local-smollm2-embed"
    assert len(answer.data[0].embedding) == 576
    assert cosine(answer.data[0].embedding, cat) > 0.999


@pytest.mark.slow
async def test_the_local_engine_refuses_dimensions_with_a_typed_error(
    aiohttp_client: Any,
) -> None:
    client = await openai_app_factory(aiohttp_client)(load_config(None))
    response = await client.post(
        "/v1/embedding/default/embed", json={"input": "x", "dimensions": 64}
    )
    assert response.status == 400
    assert (await response.json())["name"] == "unsupported_capability"
