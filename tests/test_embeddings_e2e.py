"""Embeddings end to end: a real client against Sluice on loopback, the fake embedding
server speaking each vendor's format behind it.

The official OpenAI SDK (unmodified) on `POST /v1/embeddings`, float and base64,
across a router that fails over between two vendors; Sluice's own
`POST /v1/embedding/{router}/embed`; batching by each vendor's limit with order
kept; faults (5xx, 429 with Retry-After, malformed and short answers) failing
over; bad input refused with typed errors.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from config import load_config
from fakes.embed_servers import FakeEmbed, fake_vector, run_fake_embed
from security.keys import hash_key
from server import build_app
from serving.reload import CONFIG_SOURCE, RELOADER, ConfigSource
from tests.embed_helpers import embed_config, embed_model
from tests.openai_sdk import MakeClient, openai_app_factory, sdk

TEXTS = ["the cat sat on the mat", "a kitten rests on a rug", "markets fell today"]


@pytest.fixture
def sluice(aiohttp_client: Any) -> MakeClient:
    return openai_app_factory(aiohttp_client)


@pytest.fixture
async def fake_x() -> AsyncIterator[FakeEmbed]:
    async with run_fake_embed() as fake:
        yield fake


@pytest.fixture
async def fake_y() -> AsyncIterator[FakeEmbed]:
    async with run_fake_embed() as fake:
        yield fake


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


async def test_sdk_fails_over_from_openai_to_azure_float_and_base64(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    fake_x.script.fault = "500"
    client = await sluice(
        embed_config(embed_model("oai", "openai", fake_x), embed_model("az", "azureopenai", fake_y))
    )
    async with sdk(client) as oai:
        floats = await oai.embeddings.create(model="emb", input=TEXTS, encoding_format="float")
        raw = await oai.embeddings.create(model="emb", input=TEXTS, encoding_format="base64")
        decoded = await oai.embeddings.create(model="emb", input="one text")
    assert floats.model == "emb/az"
    assert [d.index for d in floats.data] == [0, 1, 2]
    for text, item in zip(TEXTS, floats.data, strict=True):
        assert close(item.embedding, fake_vector(text, 8))
    assert floats.usage.prompt_tokens == 9
    for text, item in zip(TEXTS, raw.data, strict=True):
        packed = base64.b64decode(item.embedding)  # type: ignore[arg-type]
        assert close(list(struct.unpack("<8f", packed)), fake_vector(text, 8))
    # without encoding_format the SDK asks for base64 itself and decodes it
    assert close(decoded.data[0].embedding, fake_vector("one text", 8))
    assert fake_x.stats.requests >= 1
    assert fake_y.stats.last_path == "/openai/deployments/embed-deployment/embeddings"
    assert fake_y.stats.last_query == {"api-version": "2024-06-01"}
    assert fake_y.stats.last_headers["api-key"] == "az-fake"


@pytest.mark.parametrize(
    ("vendor", "extra", "sizes"),
    [
        ("openai", {"batch_size": 40}, [40, 40, 40, 30]),
        ("azureopenai", {}, [150]),
        ("cohere", {}, [96, 54]),
        ("gemini", {}, [100, 50]),
        ("ollama", {"batch_size": 64}, [64, 64, 22]),
        ("bedrock", {"model": "cohere.embed-english-v3"}, [96, 54]),
    ],
)
async def test_each_vendor_splits_by_its_batch_limit_and_keeps_order(
    sluice: MakeClient,
    fake_x: FakeEmbed,
    vendor: str,
    extra: dict[str, Any],
    sizes: list[int],
) -> None:
    texts = [f"text number {i}" for i in range(150)]
    client = await sluice(embed_config(embed_model("m", vendor, fake_x, max_parallel=2, **extra)))
    response = await client.post("/v1/embedding/emb/embed", json={"input": texts})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert sorted(len(b) for b in fake_x.stats.batches) == sorted(sizes)
    assert fake_x.stats.max_in_flight <= 2
    assert body["model_id"] == "m"
    assert body["dimensions"] == 8
    for text, vector in zip(texts, body["embeddings"], strict=True):
        assert close(vector, fake_vector(text, 8))


async def test_bedrock_titan_sends_one_text_per_signed_call(
    sluice: MakeClient, fake_x: FakeEmbed
) -> None:
    client = await sluice(embed_config(embed_model("t", "bedrock", fake_x, max_parallel=3)))
    response = await client.post("/v1/embedding/emb/embed", json={"input": TEXTS, "dimensions": 4})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert fake_x.stats.batches and all(len(b) == 1 for b in fake_x.stats.batches)
    assert fake_x.stats.last_path == "/model/amazon.titan-embed-text-v2:0/invoke"
    assert fake_x.stats.last_body == {"inputText": fake_x.stats.batches[-1][0], "dimensions": 4}
    assert fake_x.stats.last_headers["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"
    )
    assert [len(v) for v in body["embeddings"]] == [4, 4, 4]
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}


async def test_vendor_bodies_carry_input_type_and_dimensions(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    client = await sluice(
        embed_config(embed_model("c", "cohere", fake_x), embed_model("g", "gemini", fake_y))
    )
    body = {"input": ["q1"], "input_type": "search_query", "dimensions": 5}
    response = await client.post("/v1/embedding/emb/embed", json=body)
    assert response.status == 200
    assert fake_x.stats.last_body == {
        "model": "embed-english-v3.0",
        "texts": ["q1"],
        "input_type": "search_query",
        "embedding_types": ["float"],
        "output_dimension": 5,
    }
    client2 = await sluice(embed_config(embed_model("g", "gemini", fake_y)))
    response = await client2.post("/v1/embedding/emb/embed", json=body)
    assert response.status == 200
    assert fake_y.stats.last_path == "/v1beta/models/gemini-embedding-001:embedContent"
    assert fake_y.stats.last_body == {
        "content": {"parts": [{"text": "q1"}]},
        "taskType": "RETRIEVAL_QUERY",
        "outputDimensionality": 5,
    }
    assert fake_y.stats.last_headers["x-goog-api-key"] == "gm-fake-key"


@pytest.mark.parametrize("fault", ["500", "malformed", "wrong_count", "refuse"])
async def test_a_broken_vendor_fails_over_to_the_next(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed, fault: str
) -> None:
    fake_x.script.fault = fault
    client = await sluice(
        embed_config(embed_model("co", "cohere", fake_x), embed_model("ol", "ollama", fake_y))
    )
    response = await client.post("/v1/embedding/emb/embed", json={"input": TEXTS})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["model_id"] == "ol"
    assert body["provider_id"] == "ollama"
    assert fake_x.stats.requests >= 1


async def test_429_cools_the_model_down_for_retry_after(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    fake_x.script.faults = ["429"]
    fake_x.script.retry_after = "120"
    client = await sluice(
        embed_config(embed_model("a", "openai", fake_x), embed_model("b", "gemini", fake_y))
    )
    for _ in range(2):
        response = await client.post("/v1/embedding/emb/embed", json={"input": "hello"})
        assert (await response.json())["model_id"] == "b"
    assert fake_x.stats.requests == 1  # the second request skipped the cooling model
    listing = await (await client.get("/v1/embedding/")).json()
    models = {m["id"]: m for m in listing["routers"][0]["models"]}
    assert models["a"]["health"] == "unhealthy"
    assert models["b"]["health"] == "healthy"


async def test_every_model_failing_is_503_naming_router_and_models(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    fake_x.script.fault = "500"
    fake_y.script.fault = "malformed"
    client = await sluice(
        embed_config(embed_model("a", "openai", fake_x), embed_model("b", "ollama", fake_y))
    )
    async with sdk(client) as oai:
        with pytest.raises(openai.APIStatusError) as caught:
            await oai.embeddings.create(model="emb", input="x", encoding_format="float")
    assert caught.value.status_code == 503
    message = str(caught.value)
    assert "all_models_unavailable" in message
    assert "'emb'" in message and "a:" in message and "b:" in message
    assert "sk-fake-openai" not in message


async def test_a_vendor_400_is_the_clients_and_does_not_fail_over(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    fake_x.script.fault = "400"
    client = await sluice(
        embed_config(embed_model("a", "openai", fake_x), embed_model("b", "ollama", fake_y))
    )
    response = await client.post("/v1/embedding/emb/embed", json={"input": "x"})
    assert response.status == 400
    assert (await response.json())["name"] == "bad_request"
    assert fake_y.stats.requests == 0


async def test_dimensions_skip_models_that_cannot_shorten_vectors(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    titan_v1 = embed_model("t1", "bedrock", fake_x, model="amazon.titan-embed-text-v1")
    client = await sluice(embed_config(titan_v1, embed_model("o", "openai", fake_y)))
    async with sdk(client) as oai:
        answer = await oai.embeddings.create(
            model="emb", input="x", dimensions=3, encoding_format="float"
        )
    assert answer.model == "emb/o"
    assert len(answer.data[0].embedding) == 3
    assert fake_x.stats.requests == 0

    only_titan = await sluice(embed_config(titan_v1))
    response = await only_titan.post(
        "/v1/embedding/emb/embed", json={"input": "x", "dimensions": 3}
    )
    assert response.status == 400
    error = await response.json()
    assert error["name"] == "unsupported_capability"
    assert "dimensions" in error["message"]


async def test_pinning_a_model_and_unknown_names(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    client = await sluice(
        embed_config(embed_model("a", "openai", fake_x), embed_model("b", "ollama", fake_y))
    )
    async with sdk(client) as oai:
        pinned = await oai.embeddings.create(model="emb/b", input="x", encoding_format="float")
        assert pinned.model == "emb/b"
        with pytest.raises(openai.NotFoundError):
            await oai.embeddings.create(model="nope", input="x")
        with pytest.raises(openai.NotFoundError):
            await oai.embeddings.create(model="emb/zzz", input="x")
    assert fake_x.stats.requests == 0
    response = await client.post("/v1/embedding/nope/embed", json={"input": "x"})
    assert response.status == 404
    assert (await response.json())["name"] == "router_not_found"
    native = await client.post("/v1/embedding/emb/embed", json={"input": "x", "model_id": "a"})
    assert (await native.json())["model_id"] == "a"


@pytest.mark.parametrize(
    ("body", "status", "name"),
    [
        ({"input": [1, 2, 3]}, 400, "unsupported_input"),
        ({"input": [[1, 2], [3]]}, 400, "unsupported_input"),
        ({"input": []}, 400, "invalid_request"),
        ({"input": ["ok", ""]}, 400, "invalid_request"),
        ({"input": ["ok", 5]}, 400, "invalid_request"),
        ({"input": "x", "encoding_format": "int8"}, 400, "invalid_request"),
        ({"input": "x", "dimensions": 0}, 400, "invalid_request"),
        ({"input": ["a"] * 11}, 400, "too_many_inputs"),
        ({"input": "y" * 51}, 400, "input_too_long"),
        ({}, 400, "invalid_request"),
    ],
)
async def test_bad_input_gets_a_typed_error_on_both_surfaces(
    sluice: MakeClient, fake_x: FakeEmbed, body: dict[str, Any], status: int, name: str
) -> None:
    config = embed_config(embed_model("a", "openai", fake_x), max_inputs=10, max_input_chars=50)
    client = await sluice(config)
    native = await client.post("/v1/embedding/emb/embed", json=body)
    assert native.status == status
    assert (await native.json())["name"] == name
    oai = await client.post("/v1/embeddings", json={"model": "emb", **body})
    assert oai.status == status
    assert (await oai.json())["error"]["code"] == name
    assert fake_x.stats.requests == 0
    # the server goes on serving
    ok = await client.post("/v1/embedding/emb/embed", json={"input": "fine"})
    assert ok.status == 200


async def test_keys_guard_both_surfaces(sluice: MakeClient, fake_x: FakeEmbed) -> None:
    auth = {
        "keys": [
            {"id": "good", "hash": hash_key("good-key-123")},
            {"id": "limited", "hash": hash_key("limited-key-123"), "routers": ["other"]},
        ]
    }
    client = await sluice(embed_config(embed_model("a", "openai", fake_x), auth=auth))
    for path, body in (
        ("/v1/embeddings", {"model": "emb", "input": "x"}),
        ("/v1/embedding/emb/embed", {"input": "x"}),
    ):
        anonymous = await client.post(path, json=body)
        assert anonymous.status == 401
        limited = await client.post(
            path, json=body, headers={"Authorization": "Bearer limited-key-123"}
        )
        assert limited.status == 403
        good = await client.post(path, json=body, headers={"Authorization": "Bearer good-key-123"})
        assert good.status == 200
    limited_key = {"Authorization": "Bearer limited-key-123"}
    listing = await client.get("/v1/embedding/", headers=limited_key)
    assert (await listing.json())["routers"] == []


async def test_a_stalled_vendor_fails_over_at_its_timeout(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    fake_x.script.fault = "stall"
    client = await sluice(
        embed_config(
            embed_model("slow", "openai", fake_x, client={"timeout": 0.2}),
            embed_model("ok", "ollama", fake_y),
        )
    )
    response = await client.post("/v1/embedding/emb/embed", json={"input": TEXTS})
    assert response.status == 200
    assert (await response.json())["model_id"] == "ok"
    await fake_x.stats.wait_until(lambda: fake_x.stats.in_flight == 0, within=5.0)


async def test_a_config_reload_swaps_the_embedding_routers(
    aiohttp_client: Any, tmp_path: Path, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    path = tmp_path / "sluice.json"

    def write(*models: dict[str, Any]) -> None:
        routers = {"embedding": [{"id": "emb", "models": list(models)}]}
        path.write_text(json.dumps({"routers": routers}))

    write(embed_model("a", "openai", fake_x))
    app = build_app(load_config(path))
    app[CONFIG_SOURCE] = ConfigSource(str(path), "127.0.0.1")
    client = await aiohttp_client(app)
    first = await client.post("/v1/embedding/emb/embed", json={"input": "x"})
    assert (await first.json())["model_id"] == "a"
    write(embed_model("b", "ollama", fake_y))
    assert app[RELOADER].reload().outcome == "applied"
    second = await client.post("/v1/embedding/emb/embed", json={"input": "x"})
    assert (await second.json())["model_id"] == "b"
    assert fake_x.stats.requests == 1


async def test_the_native_body_refuses_unknown_fields(
    sluice: MakeClient, fake_x: FakeEmbed
) -> None:
    client = await sluice(embed_config(embed_model("a", "openai", fake_x)))
    response = await client.post("/v1/embedding/emb/embed", json={"input": "x", "inputs": "y"})
    assert response.status == 400
    error = await response.json()
    assert error["name"] == "invalid_request" and "inputs" in error["message"]
    # OpenAI's surface ignores fields it does not know (the SDKs send `user`, ...)
    response = await client.post(
        "/v1/embeddings", json={"model": "emb", "input": "x", "user": "u-1"}
    )
    assert response.status == 200


async def test_metrics_name_the_router_model_and_provider(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    fake_x.script.fault = "500"
    client = await sluice(
        embed_config(embed_model("a", "openai", fake_x), embed_model("b", "ollama", fake_y))
    )
    assert (await client.post("/v1/embeddings", json={"model": "emb", "input": "x"})).status == 200
    text = await (await client.get("/metrics")).text()
    assert (
        'sluice_requests_total{endpoint="embeddings",model="b",outcome="ok",provider="ollama",'
        'router="emb"} 1.0' in text
    )
    assert 'sluice_provider_attempts_total{endpoint="embeddings",model="a",' in text
    assert (
        'sluice_model_health{endpoint="embed",model="b",provider="ollama",router="emb",'
        'state="healthy"} 1.0' in text
    )


async def test_one_failed_batch_sends_the_whole_input_to_the_next_model(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    fake_x.script.faults = ["none", "500"]  # the second batch of model a fails
    fake_y.script.dims = 8
    texts = [f"t{i}" for i in range(30)]
    client = await sluice(
        embed_config(
            embed_model("a", "openai", fake_x, batch_size=10, max_parallel=1),
            embed_model("b", "cohere", fake_y),
        )
    )
    response = await client.post("/v1/embedding/emb/embed", json={"input": texts})
    body = await response.json()
    assert body["model_id"] == "b"  # never a mix of a's and b's vectors
    assert [len(b) for b in fake_y.stats.batches] == [30]
    assert len(fake_x.stats.batches) == 1  # the third batch of a was never sent
    for text, vector in zip(texts, body["embeddings"], strict=True):
        assert close(vector, fake_vector(text, 8))


async def test_config_can_say_a_model_takes_no_dimensions(
    sluice: MakeClient, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    ada = embed_model(
        "ada", "openai", fake_x, model="text-embedding-ada-002", capabilities={"dimensions": False}
    )
    client = await sluice(embed_config(ada, embed_model("g", "gemini", fake_y)))
    response = await client.post("/v1/embedding/emb/embed", json={"input": "x", "dimensions": 4})
    assert (await response.json())["model_id"] == "g"
    assert fake_x.stats.requests == 0
    plain = await client.post("/v1/embedding/emb/embed", json={"input": "x"})
    assert (await plain.json())["model_id"] == "ada"


async def test_a_config_reload_re_enables_an_embedding_model_a_401_disabled(
    aiohttp_client: Any, tmp_path: Path, fake_x: FakeEmbed, fake_y: FakeEmbed
) -> None:
    path = tmp_path / "sluice.json"
    models = [embed_model("a", "openai", fake_x), embed_model("b", "openai", fake_y)]
    path.write_text(json.dumps({"routers": {"embedding": [{"id": "emb", "models": models}]}}))
    app = build_app(load_config(path))
    app[CONFIG_SOURCE] = ConfigSource(str(path), "127.0.0.1")
    client = await aiohttp_client(app)
    fake_x.script.fault = "401"
    first = await client.post("/v1/embedding/emb/embed", json={"input": "x"})
    assert (await first.json())["model_id"] == "b"  # a is disabled until the keys are fixed
    fake_x.script.fault = "none"
    still = await client.post("/v1/embedding/emb/embed", json={"input": "x"})
    assert (await still.json())["model_id"] == "b"
    assert fake_x.stats.requests == 1
    # the same file: "the credentials are fixed"
    outcome = app[RELOADER].reload()
    assert outcome.outcome == "unchanged" and outcome.reenabled == 1
    again = await client.post("/v1/embedding/emb/embed", json={"input": "x"})
    assert (await again.json())["model_id"] == "a"
