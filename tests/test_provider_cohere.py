"""The Cohere adapter (v2 SSE and v1 JSON lines) against the fake Cohere server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from config.models import ClientConfig, CohereConfig
from fakes.cohere_server import GENERATION_ERROR, FakeCohere, run_fake_cohere
from providers.cohere import CohereProvider
from providers.types import ChatDelta, ChatParams, ErrorCategory, Message, ProviderError, TokenUsage
from tests.provider_helpers import collect, stream_error

KEY = "co-test-0123456789abcdef"
API = pytest.mark.parametrize("api", ["v2", "v1"])

Api = Literal["v1", "v2"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeCohere]:
    async with run_fake_cohere() as server:
        yield server


def cohere(
    fake: FakeCohere, session: aiohttp.ClientSession, api: Api = "v2", **config: Any
) -> CohereProvider:
    settings: dict[str, Any] = {
        "base_url": f"{fake.url}/",
        "api": api,
        "model": "command-test",
        "api_key": KEY,
    }
    settings.update(config)
    return CohereProvider(CohereConfig(**settings), ClientConfig(), session)


CONVERSATION = ChatParams(
    messages=(
        Message("system", "be brief"),
        Message("user", "hi"),
        Message("assistant", "hello"),
        Message("system", "answer in French"),
        Message("user", "how are you?", name="ann"),
    ),
    params={"temperature": 0.5, "top_p": 0.9, "top_k": 5, "stop": "END", "model": "other"},
)


# --- streaming: the happy path -------------------------------------------------------


@API
async def test_stream_yields_text_then_final_delta_with_billed_usage(
    fake: FakeCohere, session: aiohttp.ClientSession, api: Api
) -> None:
    provider = cohere(fake, session, api)
    assert (provider.provider_id, provider.model_name) == ("cohere", "command-test")
    deltas = await collect(provider)
    assert deltas == [
        ChatDelta("Hello"),
        ChatDelta(" from"),
        ChatDelta(" fake"),
        ChatDelta("", finish_reason="complete", usage=TokenUsage(7, 3, 10)),
    ]
    assert fake.stats.last_path == f"/{api}/chat"
    assert fake.stats.last_headers["Authorization"] == f"Bearer {KEY}"
    assert fake.stats.streams_completed == 1


async def test_v2_request_body_and_headers(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    provider = cohere(fake, session, "v2", default_params={"temperature": 0.1, "max_tokens": 9})
    await collect(provider, CONVERSATION)
    assert fake.stats.last_headers["Accept"] == "text/event-stream"
    assert fake.stats.last_body == {
        "temperature": 0.5,
        "max_tokens": 9,
        "p": 0.9,
        "k": 5,
        "stop_sequences": ["END"],
        "model": "command-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "answer in French"},
            {"role": "user", "content": "how are you?"},
        ],
        "stream": True,
    }


async def test_v1_request_body_has_message_history_and_preamble(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    provider = cohere(fake, session, "v1", default_params={"p": 0.5, "chat_history": ["x"]})
    await collect(provider, CONVERSATION)
    assert fake.stats.last_body == {
        "temperature": 0.5,
        "p": 0.5,  # Cohere's own name wins over the OpenAI-style alias
        "k": 5,
        "stop_sequences": ["END"],
        "model": "command-test",
        "message": "how are you?",
        "chat_history": [
            {"role": "USER", "message": "hi"},
            {"role": "CHATBOT", "message": "hello"},
        ],
        "preamble": "be brief\n\nanswer in French",
        "stream": True,
    }


async def test_v1_without_a_final_user_message_is_a_bad_request(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    params = ChatParams(messages=(Message("user", "hi"), Message("assistant", "hello")))
    with pytest.raises(ProviderError) as caught:
        await collect(cohere(fake, session, "v1"), params)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert not caught.value.retryable
    assert fake.stats.requests == 0


@API
@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("COMPLETE", "complete"),
        ("STOP_SEQUENCE", "complete"),
        ("MAX_TOKENS", "max_tokens"),
        ("ERROR_LIMIT", "max_tokens"),
        ("ERROR_TOXIC", "content_filtered"),
        ("TOOL_CALL", "other"),
    ],
)
async def test_finish_reason_mapping(
    fake: FakeCohere, session: aiohttp.ClientSession, api: Api, vendor: Any, ours: str
) -> None:
    fake.script.finish_reason = vendor
    deltas = await collect(cohere(fake, session, api))
    assert deltas[-1].finish_reason == ours


@API
async def test_filtered_answer_without_text_is_not_empty_output(
    fake: FakeCohere, session: aiohttp.ClientSession, api: Api
) -> None:
    fake.script.fault = "empty"
    fake.script.finish_reason = "ERROR_TOXIC"
    deltas = await collect(cohere(fake, session, api))
    assert deltas == [ChatDelta("", finish_reason="content_filtered", usage=TokenUsage(7, 0, 7))]


# --- streaming: faults ---------------------------------------------------------------


async def test_vendor_error_message_is_kept(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "http_401"
    error, _ = await stream_error(cohere(fake, session))
    assert error.message == "cohere/command-test: invalid api token"


async def test_v2_generation_error_keeps_earlier_deltas_and_cohere_message(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "error_event"
    fake.script.fault_after_chunks = 2
    error, seen = await stream_error(cohere(fake, session))
    assert [d.content for d in seen] == ["Hello", " from"]
    assert error.message == f"cohere/command-test: {GENERATION_ERROR}"


async def test_v1_generation_error_names_the_finish_reason(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "error_event"
    error, seen = await stream_error(cohere(fake, session, "v1"))
    assert [d.content for d in seen] == ["Hello"]
    assert error.message == "cohere/command-test: finish_reason ERROR"


@API
async def test_timeout_finish_reason_is_a_timeout(
    fake: FakeCohere, session: aiohttp.ClientSession, api: Api
) -> None:
    fake.script.finish_reason = "TIMEOUT"
    error, _ = await stream_error(cohere(fake, session, api))
    assert error.category is ErrorCategory.TIMEOUT


@API
async def test_truncated_stream_names_the_missing_terminator(
    fake: FakeCohere, session: aiohttp.ClientSession, api: Api
) -> None:
    fake.script.fault = "truncated"
    fake.script.fault_after_chunks = 2
    error, seen = await stream_error(cohere(fake, session, api))
    assert [d.content for d in seen] == ["Hello", " from"]
    terminator = "message-end" if api == "v2" else "stream-end"
    assert error.message == f"cohere/command-test: stream ended before {terminator}"


async def test_missing_key_header_is_refused_by_the_fake(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    provider = CohereProvider(
        CohereConfig(base_url=fake.url, api_key=SecretStr("")), ClientConfig(), session
    )
    error, _ = await stream_error(provider)
    assert error.category is ErrorCategory.AUTH
    assert "Authorization" not in fake.stats.last_headers


# --- wire details the fake does not produce ----------------------------------------------


async def test_v2_skips_unknown_events_and_uses_token_counts_without_billed_units(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: message-start\ndata: {"type": "message-start", "id": "x"}\n\n')
        await resp.write(b'event: tool-plan-delta\ndata: {"type": "tool-plan-delta"}\n\n')
        await resp.write(
            b'event: content-delta\r\ndata: {"type": "content-delta", "delta": {"message": '
            b'{"content": {"text": "ok"}}}}\r\n\r\n'
        )
        await resp.write(
            b'event: message-end\ndata: {"type": "message-end", "delta": {"finish_reason": '
            b'"COMPLETE", "usage": {"tokens": {"input_tokens": 2.0, "output_tokens": 1}}}}\n\n'
        )
        return resp

    app = web.Application()
    app.router.add_post("/v2/chat", handler)
    server = await aiohttp_server(app)
    config = CohereConfig(base_url=str(server.make_url("")), model="m", api_key=SecretStr(KEY))
    deltas = await collect(CohereProvider(config, ClientConfig(), session))
    assert deltas == [
        ChatDelta("ok"),
        ChatDelta("", finish_reason="complete", usage=TokenUsage(2, 1, 3)),
    ]
