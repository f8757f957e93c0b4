"""The fake OpenAI server speaks the wire format it claims and records what it saw."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from fakes.openai_server import (
    FAKE_STATS,
    FakeOpenAI,
    make_fake_openai_app,
    run_fake_openai,
)

BODY: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def sse_events(raw: str) -> list[str]:
    return [block[len("data: ") :] for block in raw.split("\n\n") if block.startswith("data: ")]


async def test_non_streaming_completion_shape(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    async with session.post(f"{fake.url}/chat/completions", json=BODY) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-test"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello from fake",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert fake.stats.requests == 1
    assert fake.stats.last_body == BODY
    assert fake.stats.streams_completed == 1


async def test_stream_events_in_openai_order(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.script.finish_reason = "length"
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    async with session.post(f"{fake.url}/chat/completions", json=body) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        events = sse_events(await resp.text())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:4]] == ["Hello", " from", " fake"]
    assert chunks[4]["choices"][0]["finish_reason"] == "length"
    assert chunks[5]["choices"] == []
    assert chunks[5]["usage"]["total_tokens"] == 10
    stamps = [c["sluice_sent_ns"] for c in chunks]
    assert stamps == sorted(stamps)


async def test_stream_without_include_usage_has_no_usage_chunk(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    async with session.post(f"{fake.url}/chat/completions", json={**BODY, "stream": True}) as resp:
        events = sse_events(await resp.text())
    assert not any("usage" in json.loads(e) for e in events[:-1])


async def test_fault_header_overrides_script_and_errors_use_openai_shape(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.script.retry_after = "Wed, 21 Oct 2015 07:28:00 GMT"
    headers = {"x-fake-fault": "http_429"}
    async with session.post(f"{fake.url}/chat/completions", json=BODY, headers=headers) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
        error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"

    headers = {"x-fake-fault": "no-such-fault"}
    async with session.post(f"{fake.url}/chat/completions", json=BODY, headers=headers) as resp:
        assert resp.status == 400


async def test_azure_route_records_deployment_query_and_key(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    url = f"{fake.root}/openai/deployments/dep-1/chat/completions?api-version=2024-06-01"
    async with session.post(url, json={"messages": []}, headers={"api-key": "k"}) as resp:
        assert (await resp.json())["model"] == "dep-1"
    assert fake.stats.last_path == "/openai/deployments/dep-1/chat/completions"
    assert fake.stats.last_query == {"api-version": "2024-06-01"}
    assert fake.stats.last_headers["api-key"] == "k"


async def test_refuse_drops_the_connection(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "refuse"
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(f"{fake.url}/chat/completions", json=BODY):
            pass


async def test_records_a_stream_the_client_abandons(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "stall_before_first"
    async with session.post(f"{fake.url}/chat/completions", json={**BODY, "stream": True}) as resp:
        assert resp.status == 200
        await fake.stats.wait_until(lambda: fake.stats.open_streams == 1)
        resp.close()
    await fake.wait_stream_closed(1.0)
    await fake.stats.wait_idle(1.0)
    assert fake.stats.streams_closed_by_client == 1
    assert fake.stats.streams_completed == 0


async def test_app_factory_detects_client_close_without_handler_cancellation(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    app = make_fake_openai_app()
    server = await aiohttp_server(app)
    stats = app[FAKE_STATS]
    body = {**BODY, "stream": True, "x": 1}
    headers = {"x-fake-fault": "stall_mid_stream"}
    url = str(server.make_url("/v1/chat/completions"))
    async with session.post(url, json=body, headers=headers) as resp:
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        resp.close()
    await stats.wait_stream_closed(1.0)
    assert stats.open_streams == 0


async def test_delay_spaces_chunks(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.script.delay = 0.02
    fake.script.chunks = ["a", "b"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with session.post(f"{fake.url}/chat/completions", json={**BODY, "stream": True}) as resp:
        await resp.read()
    assert loop.time() - started >= 0.04
