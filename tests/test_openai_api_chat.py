"""`POST /v1/chat/completions` with the official `openai` SDK as the client, against
fake OpenAI upstreams: plain and streamed answers, pinning `router/model`, params,
failover before and after the first chunk, errors in OpenAI's shape."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from fakes.openai_server import FakeOpenAI
from tests.conftest import make_config, openai_model
from tests.openai_sdk import Client, MakeClient, openai_app_factory, sdk

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def sluice(aiohttp_client: Any) -> MakeClient:
    return openai_app_factory(aiohttp_client)


async def _stream_text(oai: AsyncOpenAI, model: str, **extra: Any) -> tuple[str, list[Any]]:
    chunks = []
    stream = await oai.chat.completions.create(model=model, messages=USER, stream=True, **extra)
    async for chunk in stream:
        chunks.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


async def test_non_streaming_completion(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with sdk(client) as oai:
        completion = await oai.chat.completions.create(
            model="r",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello?"},
                {"role": "user", "content": [{"type": "text", "text": "Again"}]},
            ],
            temperature=0.25,
            max_tokens=7,
            stop=["\n"],
        )
    assert completion.object == "chat.completion"
    assert completion.model == "r/a"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hello from fake"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    sent = fake_a.stats.last_body
    assert sent is not None
    assert sent["temperature"] == 0.25
    assert sent["max_tokens"] == 7
    assert sent["stop"] == ["\n"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][-1]["content"] == "Again"


async def test_length_finish_reason_maps_back(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    fake_a.script.finish_reason = "length"
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with sdk(client) as oai:
        completion = await oai.chat.completions.create(model="r", messages=USER)
        _, chunks = await _stream_text(oai, "r")
    assert completion.choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


async def test_streaming_completion_with_usage(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with sdk(client) as oai:
        text, chunks = await _stream_text(oai, "r", stream_options={"include_usage": True})
    assert text == "Hello from fake"
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {"r/a"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None


async def test_pinning_router_slash_model(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with sdk(client) as oai:
        completion = await oai.chat.completions.create(model="r/b", messages=USER)
        text, chunks = await _stream_text(oai, "r/b")
        default = await oai.chat.completions.create(model="r", messages=USER)
    assert (completion.model, completion.choices[0].message.content) == ("r/b", "Backup answer")
    assert (text, {c.model for c in chunks}) == ("Backup answer", {"r/b"})
    assert default.model == "r/a"
    assert fake_a.stats.requests == 1
    assert fake_b.stats.requests == 2


async def test_pinned_model_does_not_fail_over(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_b.script.fault = "http_500"
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with sdk(client) as oai:
        with pytest.raises(openai.InternalServerError) as raised:
            await oai.chat.completions.create(model="r/b", messages=USER)
    assert raised.value.status_code == 503
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "all_models_unavailable"
    assert fake_a.stats.requests == 0


async def test_failover_before_the_first_chunk_is_invisible(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_500"
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with sdk(client) as oai:
        text, chunks = await _stream_text(oai, "r")
    assert text == "Backup answer"
    assert {c.model for c in chunks} == {"r/b"}


async def test_truncated_stream_on_the_only_model_raises(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.fault = "truncated"
    client = await sluice(make_config(openai_model("a", fake_a), mid_stream="restart"))
    received: list[str] = []
    async with sdk(client) as oai:
        stream = await oai.chat.completions.create(model="r", messages=USER, stream=True)
        with pytest.raises(openai.APIError) as raised:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello"
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "model_unavailable"


async def test_failover_after_the_first_chunk_raises_not_splices(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.fault = "truncated"
    client = await sluice(
        make_config(openai_model("a", fake_a), openai_model("b", fake_b), mid_stream="restart")
    )
    received: list[str] = []
    async with sdk(client) as oai:
        stream = await oai.chat.completions.create(model="r", messages=USER, stream=True)
        with pytest.raises(openai.APIError) as raised:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello"
    assert "r/a" in raised.value.message
    assert "Backup" not in "".join(received)


async def test_all_models_unavailable_before_streaming_is_503(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_500"
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with sdk(client) as oai:
        with pytest.raises(openai.InternalServerError) as raised:
            await oai.chat.completions.create(model="r", messages=USER, stream=True)
    assert raised.value.status_code == 503


@pytest.mark.parametrize("model", ["nope", "r/nope"])
async def test_unknown_router_or_model_is_404(
    sluice: MakeClient, fake_a: FakeOpenAI, model: str
) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with sdk(client) as oai:
        with pytest.raises(openai.NotFoundError) as raised:
            await oai.chat.completions.create(model=model, messages=USER)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "model_not_found"
    assert raised.value.body["param"] == "model"
    assert fake_a.stats.requests == 0


async def _post(client: Client, body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/chat/completions", json=body)
    data: dict[str, Any] = await resp.json()
    return resp.status, data


async def test_invalid_bodies_are_400_in_openai_shape(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    for body in (
        {"model": "r"},
        {"model": "r", "messages": []},
        {"model": "r", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "r", "messages": USER, "n": 2},
        [1, 2],
    ):
        status, data = await _post(client, body)
        assert status == 400, body
        assert set(data["error"]) == {"message", "type", "param", "code"}
        assert data["error"]["type"] == "invalid_request_error"
    resp = await client.post("/v1/chat/completions", data=b"{not json")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "payload_parse_error"
    assert fake_a.stats.requests == 0
