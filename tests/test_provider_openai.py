"""The OpenAI and Azure OpenAI adapters against the fake server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from config.models import AzureOpenAIConfig, ClientConfig, OpenAIConfig
from fakes.openai_server import FakeOpenAI, Fault, run_fake_openai
from providers.azure import AzureOpenAIProvider
from providers.http_errors import error_from_exception, parse_retry_after, redact
from providers.openai import OpenAIProvider
from providers.sse import SSEDecoder, SSEEvent
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    Message,
    ProviderError,
    TokenUsage,
)
from tests.provider_helpers import PARAMS, collect, stream_error

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


def openai(fake: FakeOpenAI, session: aiohttp.ClientSession, **config: Any) -> OpenAIProvider:
    settings: dict[str, Any] = {"base_url": fake.url, "model": "gpt-test", "api_key": KEY}
    settings.update(config)
    return OpenAIProvider(OpenAIConfig(**settings), ClientConfig(), session)


# --- streaming: the happy path -------------------------------------------------


async def test_stream_yields_text_then_final_delta_with_usage(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    deltas = await collect(openai(fake, session))
    assert [d.content for d in deltas] == ["Hello", " from", " fake", ""]
    assert all(d.finish_reason is None for d in deltas[:-1])
    final = deltas[-1]
    assert final.finish_reason == "complete"
    assert final.usage == TokenUsage(prompt_tokens=7, response_tokens=3, total_tokens=10)
    assert final.metadata == {"response_id": "chatcmpl-fake1", "system_fingerprint": "fp_fake"}
    assert fake.stats.streams_completed == 1


async def test_stream_sends_bearer_key_and_merged_params(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    provider = openai(
        fake, session, default_params={"temperature": 0.1, "max_tokens": 10, "stream": False}
    )
    params = ChatParams(
        messages=(Message("system", "be brief"), Message("user", "hi", name="ann")),
        params={"temperature": 0.5, "top_p": 0.9, "model": "other"},
    )
    await collect(provider, params)
    assert fake.stats.last_headers["Authorization"] == f"Bearer {KEY}"
    assert fake.stats.last_headers["Accept"] == "text/event-stream"
    assert fake.stats.last_body == {
        "temperature": 0.5,
        "max_tokens": 10,
        "top_p": 0.9,
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi", "name": "ann"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_no_authorization_header_without_a_key(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    await collect(openai(fake, session, api_key=None))
    assert "Authorization" not in fake.stats.last_headers


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("stop", "complete"),
        ("length", "max_tokens"),
        ("content_filter", "content_filtered"),
        ("tool_calls", "other"),
    ],
)
async def test_finish_reason_mapping(
    fake: FakeOpenAI, session: aiohttp.ClientSession, vendor: Any, ours: str
) -> None:
    fake.script.finish_reason = vendor
    deltas = await collect(openai(fake, session))
    assert deltas[-1].finish_reason == ours


@pytest.mark.parametrize("fault", ["empty_data", "empty_choices"])
async def test_blank_events_and_empty_choices_are_tolerated(
    fake: FakeOpenAI, session: aiohttp.ClientSession, fault: Fault
) -> None:
    fake.script.fault = fault
    deltas = await collect(openai(fake, session))
    assert "".join(d.content for d in deltas) == "Hello from fake"
    assert deltas[-1].finish_reason == "complete"
    assert deltas[-1].usage is not None


async def test_events_split_across_reads_are_reassembled(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.script.split_events = True
    deltas = await collect(openai(fake, session))
    assert [d.content for d in deltas] == ["Hello", " from", " fake", ""]


async def test_content_filtered_without_text_is_not_empty_output(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "empty"
    fake.script.finish_reason = "content_filter"
    deltas = await collect(openai(fake, session))
    assert deltas == [
        ChatDelta(
            "",
            finish_reason="content_filtered",
            usage=TokenUsage(7, 0, 7),
            metadata={"response_id": "chatcmpl-fake1", "system_fingerprint": "fp_fake"},
        )
    ]


# --- streaming: faults -----------------------------------------------------------


async def test_vendor_message_is_kept_and_keys_are_redacted(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "http_400"
    error, _ = await stream_error(openai(fake, session))
    assert "Invalid value for 'temperature'" in error.message
    fake.script.fault = "http_401"
    error, _ = await stream_error(openai(fake, session))
    assert "Incorrect API key provided: sk-***" in error.message
    assert "2345" not in error.message


async def test_retry_after_as_http_date(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.script.fault = "http_429"
    fake.script.retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=30), True)
    error, _ = await stream_error(openai(fake, session))
    assert error.retry_after is not None
    assert 28.0 <= error.retry_after <= 30.0


async def test_truncated_stream_keeps_earlier_deltas_and_says_why(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "truncated"
    fake.script.fault_after_chunks = 2
    error, seen = await stream_error(openai(fake, session))
    assert [d.content for d in seen] == ["Hello", " from"]
    assert error.message == "openai/gpt-test: stream ended before [DONE]"


async def test_connection_refused_is_transient(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m")
    provider = OpenAIProvider(config, ClientConfig(), session)
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    assert caught.value.category is ErrorCategory.TRANSIENT
    assert caught.value.retryable


# --- Azure ---------------------------------------------------------------------------


async def test_azure_url_header_and_stream(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    config = AzureOpenAIConfig(
        base_url=f"{fake.root}/",
        model="my-deploy",
        api_version="2024-10-21",
        api_key=SecretStr(KEY),
    )
    provider = AzureOpenAIProvider(config, ClientConfig(), session)
    assert (provider.provider_id, provider.model_name) == ("azureopenai", "my-deploy")
    deltas = [d async for d in provider.stream(PARAMS)]
    assert "".join(d.content for d in deltas) == "Hello from fake"
    assert fake.stats.last_path == "/openai/deployments/my-deploy/chat/completions"
    assert fake.stats.last_query == {"api-version": "2024-10-21"}
    assert fake.stats.last_headers["api-key"] == KEY
    assert "Authorization" not in fake.stats.last_headers

    fake.script.fault = "http_401"
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    assert caught.value.category is ErrorCategory.AUTH
    assert caught.value.message.startswith("azureopenai/my-deploy: ")
    assert KEY not in str(caught.value)


# --- wire details a fake in the vendor's own words covers ------------------------------


async def test_crlf_multiline_data_and_in_stream_error(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: message\r\nid: 1\r\ndata: {"choices": [{"index": 0,\r\n')
        await resp.write(b'data: "delta": {"content": "ok"}}]}\r\n\r\n')
        await resp.write(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n')
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(app)
    config = OpenAIConfig(base_url=str(server.make_url("/v1")), model="m")
    error, seen = await stream_error(OpenAIProvider(config, ClientConfig(), session))
    assert [d.content for d in seen] == ["ok"]
    assert error.category is ErrorCategory.TRANSIENT
    assert error.message == "openai/m: overloaded"


# --- pure helpers ------------------------------------------------------------------------


def test_sse_decoder_joins_data_lines_and_skips_comments() -> None:
    decoder = SSEDecoder()
    lines = [": comment", "event: x", "data:a", "data: b", "retry: 5", "", "", "data:", ""]
    out = [decoder.feed(line) for line in lines]
    assert [o for o in out if o is not None] == [SSEEvent("x", "a\nb"), SSEEvent("message", "")]
    assert decoder.feed("data: tail") is None
    assert decoder.flush() == SSEEvent("message", "tail")
    assert decoder.flush() is None


NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("garbage", None),
        ("", None),
        (None, None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_redact_hides_given_secrets_and_key_like_tokens() -> None:
    assert redact("key=abc123 and sk-proj-AbCdEf12", ["abc123"]) == "key=*** and sk-***"


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (aiohttp.ServerTimeoutError("connect timed out"), ErrorCategory.TIMEOUT),
        (TimeoutError(), ErrorCategory.TIMEOUT),
        (aiohttp.ServerDisconnectedError(), ErrorCategory.TRANSIENT),
        (aiohttp.ClientOSError(104, "reset"), ErrorCategory.TRANSIENT),
        (aiohttp.ClientPayloadError("incomplete"), ErrorCategory.PROTOCOL),
    ],
)
def test_error_from_exception(exc: BaseException, category: ErrorCategory) -> None:
    error = error_from_exception(exc, "openai/m")
    assert error.category is category
    assert error.message.startswith("openai/m: ")
