"""The Gemini adapter against the fake Gemini server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from config.models import ClientConfig, GeminiConfig
from fakes.gemini_server import FakeGemini, run_fake_gemini
from providers.gemini import GeminiProvider, build_contents
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    Message,
    ProviderError,
    TokenUsage,
)
from tests.provider_helpers import collect, stream_error

KEY = "AIzaSy-test-0123456789abcdef"
META = {"response_id": "fake-response-1", "model_version": "gemini-test"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with run_fake_gemini() as server:
        yield server


def gemini(fake: FakeGemini, session: aiohttp.ClientSession, **config: Any) -> GeminiProvider:
    settings: dict[str, Any] = {"base_url": fake.url, "model": "gemini-test", "api_key": KEY}
    settings.update(config)
    return GeminiProvider(GeminiConfig(**settings), ClientConfig(), session)


# --- streaming: the happy path -------------------------------------------------------


async def test_stream_yields_text_then_final_delta_with_usage(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    deltas = await collect(gemini(fake, session))
    assert [d.content for d in deltas] == ["Hello", " from", " Gemini", ""]
    assert all(d.finish_reason is None for d in deltas[:-1])
    final = deltas[-1]
    assert final.finish_reason == "complete"
    assert final.usage == TokenUsage(prompt_tokens=6, response_tokens=3, total_tokens=9)
    assert final.metadata == META
    assert fake.stats.streams_completed == 1


async def test_url_key_header_and_body(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    provider = gemini(
        fake,
        session,
        model="models/gemini-test",
        default_params={
            "temperature": 0.1,
            "max_tokens": 10,
            "generationConfig": {"topK": 3, "seed": 1},
            "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
        },
    )
    params = ChatParams(
        messages=(
            Message("system", "be brief"),
            Message("user", "hi", name="ann"),
            Message("user", "there"),
            Message("assistant", "hello"),
            Message("system", "in French"),
            Message("user", "more"),
        ),
        params={
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "maxOutputTokens": 20,
            "responseMimeType": "text/plain",
            "contents": [],
        },
    )
    await collect(provider, params)
    assert fake.stats.last_path == "/v1beta/models/gemini-test:streamGenerateContent"
    assert fake.stats.last_query == {"alt": "sse"}
    assert fake.stats.last_headers["x-goog-api-key"] == KEY
    assert fake.stats.last_headers["Accept"] == "text/event-stream"
    assert "Authorization" not in fake.stats.last_headers
    assert fake.stats.last_body == {
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}, {"text": "there"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "more"}]},
        ],
        "systemInstruction": {"parts": [{"text": "be brief\n\nin French"}]},
        "generationConfig": {
            "temperature": 0.5,
            "maxOutputTokens": 20,
            "topK": 3,
            "seed": 1,
            "topP": 0.9,
            "stopSequences": ["END"],
            "responseMimeType": "text/plain",
        },
    }


async def test_plain_request_has_no_generation_config(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    await collect(gemini(fake, session))
    assert fake.stats.last_body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_build_contents_without_system() -> None:
    instruction, contents = build_contents((Message("assistant", "a"), Message("tool", "b")))
    assert instruction is None
    assert contents == [
        {"role": "model", "parts": [{"text": "a"}]},
        {"role": "user", "parts": [{"text": "b"}]},
    ]


async def test_thought_parts_are_not_text_but_count_as_response_tokens(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    fake.script.thought = "**Thinking** about greetings"
    fake.script.thoughts_tokens = 40
    deltas = await collect(gemini(fake, session))
    assert "".join(d.content for d in deltas) == "Hello from Gemini"
    assert deltas[-1].usage == TokenUsage(prompt_tokens=6, response_tokens=43, total_tokens=49)


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("STOP", "complete"),
        ("MAX_TOKENS", "max_tokens"),
        ("SAFETY", "content_filtered"),
        ("RECITATION", "content_filtered"),
        ("BLOCKLIST", "content_filtered"),
        ("PROHIBITED_CONTENT", "content_filtered"),
        ("SPII", "content_filtered"),
        ("OTHER", "other"),
    ],
)
async def test_finish_reason_mapping(
    fake: FakeGemini, session: aiohttp.ClientSession, vendor: Any, ours: str
) -> None:
    fake.script.finish_reason = vendor
    deltas = await collect(gemini(fake, session))
    assert deltas[-1].finish_reason == ours


async def test_safety_stop_without_text_is_not_empty_output(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "empty"
    fake.script.finish_reason = "SAFETY"
    deltas = await collect(gemini(fake, session))
    assert deltas == [
        ChatDelta("", finish_reason="content_filtered", usage=TokenUsage(6, 0, 6), metadata=META)
    ]


# --- streaming: faults ---------------------------------------------------------------


async def test_error_messages_carry_rpc_status_and_text(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "invalid_key"
    error, _ = await stream_error(gemini(fake, session))
    assert error.message == (
        "gemini/gemini-test: INVALID_ARGUMENT: API key not valid. Please pass a valid API key."
    )
    fake.script.fault = "blocked_prompt"
    error, _ = await stream_error(gemini(fake, session))
    assert error.message == "gemini/gemini-test: prompt blocked: SAFETY"


async def test_retry_after_falls_back_to_retry_info(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "http_429"
    fake.script.retry_after = None
    error, _ = await stream_error(gemini(fake, session))
    assert error.category is ErrorCategory.RATE_LIMITED
    assert error.retry_after == 12.0
    fake.script.retry_delay = None
    error, _ = await stream_error(gemini(fake, session))
    assert error.retry_after is None


async def test_mid_stream_error_event_keeps_earlier_text(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "error_event"
    fake.script.fault_after_chunks = 2
    error, seen = await stream_error(gemini(fake, session))
    assert [d.content for d in seen] == ["Hello", " from"]
    assert error.message == (
        "gemini/gemini-test: UNAVAILABLE: The model is overloaded. Please try again later."
    )


async def test_stream_without_finish_reason_is_truncated(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "truncated"
    fake.script.fault_after_chunks = 2
    error, seen = await stream_error(gemini(fake, session))
    assert [d.content for d in seen] == ["Hello", " from"]
    assert error.message == "gemini/gemini-test: stream ended without a finishReason"


# --- wire details a hand-written server covers -------------------------------------------


async def _serve(aiohttp_server: AiohttpServer, status: int, body: bytes, ctype: str) -> str:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": ctype})
        await resp.prepare(request)
        await resp.write(body)
        return resp

    app = web.Application()
    app.router.add_post("/v1beta/models/{target}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1beta"))


async def test_events_after_finish_and_blank_events_are_tolerated(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    body = (
        b'data: {"candidates": [{"content": {"parts": [{"text": "ok"}]}}]}\n\n'
        b"data:\n\n"
        b'data: {"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "STOP"}]}'
        b"\n\n"
        b'data: {"usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1}}\n\n'
    )
    url = await _serve(aiohttp_server, 200, body, "text/event-stream")
    config = GeminiConfig(base_url=url, model="m", api_key=SecretStr(KEY))
    deltas = await collect(GeminiProvider(config, ClientConfig(), session))
    assert deltas == [
        ChatDelta("ok"),
        ChatDelta("", finish_reason="complete", usage=TokenUsage(2, 1, 3)),
    ]


async def test_error_body_wrapped_in_an_array_and_echoed_key_is_redacted(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    body = (
        b'[{"error": {"code": 429, "message": "quota for key ' + KEY.encode() + b' exhausted",'
        b' "status": "RESOURCE_EXHAUSTED", "details": [{"@type":'
        b' "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}]}}]'
    )
    url = await _serve(aiohttp_server, 429, body, "application/json")
    config = GeminiConfig(base_url=url, model="m", api_key=SecretStr(KEY))
    with pytest.raises(ProviderError) as caught:
        await collect(GeminiProvider(config, ClientConfig(), session))
    assert caught.value.category is ErrorCategory.RATE_LIMITED
    assert caught.value.retry_after == 2.5
    assert caught.value.message == "gemini/m: RESOURCE_EXHAUSTED: quota for key *** exhausted"


async def test_non_json_error_body_is_classified_by_status(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    url = await _serve(aiohttp_server, 502, b"<html>Bad Gateway</html>", "text/html")
    config = GeminiConfig(base_url=url, model="m", api_key=SecretStr(KEY))
    with pytest.raises(ProviderError) as caught:
        await collect(GeminiProvider(config, ClientConfig(), session))
    assert caught.value.category is ErrorCategory.TRANSIENT
    assert caught.value.status == 502
    assert caught.value.message == "gemini/m: <html>Bad Gateway</html>"
