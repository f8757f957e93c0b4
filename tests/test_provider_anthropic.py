"""The Anthropic Messages adapter against the fake Anthropic server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from config.models import AnthropicConfig, ClientConfig
from fakes.anthropic_server import FakeAnthropic, run_fake_anthropic
from providers.anthropic import AnthropicProvider, split_messages
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    Message,
    ProviderError,
    TokenUsage,
    ToolCallDelta,
)
from tests.provider_helpers import PARAMS, collect, stream_error

KEY = "sk-ant-test-0123456789abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with run_fake_anthropic() as server:
        yield server


def claude(fake: FakeAnthropic, session: aiohttp.ClientSession, **config: Any) -> AnthropicProvider:
    settings: dict[str, Any] = {"base_url": fake.url, "model": "claude-test", "api_key": KEY}
    settings.update(config)
    return AnthropicProvider(AnthropicConfig(**settings), ClientConfig(), session)


# --- streaming: the happy path -------------------------------------------------------


async def test_stream_yields_text_then_final_delta_with_usage(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.script.cache_read_input_tokens = 4
    deltas = await collect(claude(fake, session))
    assert [d.content for d in deltas] == ["Hello", " from", " Claude", ""]
    assert all(d.finish_reason is None for d in deltas[:-1])
    final = deltas[-1]
    assert final.finish_reason == "complete"
    # 11 uncached + 4 cache-read prompt tokens; output_tokens from message_delta
    assert final.usage == TokenUsage(prompt_tokens=15, response_tokens=3, total_tokens=18)
    assert final.metadata == {"response_id": "msg_fake1"}
    assert fake.stats.streams_completed == 1


async def test_request_headers_body_system_and_merged_params(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    provider = claude(
        fake,
        session,
        api_version="2023-01-01",
        default_params={"max_tokens": 100, "temperature": 0.1, "stream": False, "model": "x"},
    )
    params = ChatParams(
        messages=(
            Message("system", "be brief"),
            Message("user", "hi", name="ann"),
            Message("system", "answer in French"),
            Message("user", "again"),
            Message("assistant", "bonjour"),
            Message("assistant", "salut"),
            Message("user", "more"),
        ),
        params={"temperature": 0.5, "top_k": 5, "stop": "END", "messages": []},
    )
    await collect(provider, params)
    headers = fake.stats.last_headers
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-01-01"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "text/event-stream"
    assert "Authorization" not in headers
    assert fake.stats.last_path == "/v1/messages"
    assert fake.stats.last_body == {
        "max_tokens": 100,
        "temperature": 0.5,
        "top_k": 5,
        "stop_sequences": ["END"],
        "model": "claude-test",
        "system": "be brief\n\nanswer in French",
        "messages": [
            {"role": "user", "content": "hi\n\nagain"},
            {"role": "assistant", "content": "bonjour\n\nsalut"},
            {"role": "user", "content": "more"},
        ],
        "stream": True,
    }


async def test_max_tokens_is_always_sent(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    deltas = await collect(claude(fake, session, default_params={}))
    assert deltas[-1].finish_reason == "complete"
    assert fake.stats.last_body is not None
    assert fake.stats.last_body["max_tokens"] == 1024
    assert "system" not in fake.stats.last_body
    # the default config block carries max_tokens, and a request may override it
    await collect(claude(fake, session), ChatParams(PARAMS.messages, {"max_tokens": 7}))
    assert fake.stats.last_body["max_tokens"] == 7


def test_split_messages_maps_roles_and_keeps_order() -> None:
    system, turns = split_messages(
        (Message("user", "a"), Message("tool", "b"), Message("assistant", "c"))
    )
    assert system is None
    assert turns == [
        {"role": "user", "content": "a\n\nb"},
        {"role": "assistant", "content": "c"},
    ]


async def test_thinking_and_signature_deltas_are_not_text(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.script.thinking = "Let me think about this"
    deltas = await collect(claude(fake, session))
    assert "".join(d.content for d in deltas) == "Hello from Claude"


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("end_turn", "complete"),
        ("stop_sequence", "complete"),
        ("max_tokens", "max_tokens"),
        ("refusal", "content_filtered"),
        ("tool_use", "other"),
        ("pause_turn", "other"),
    ],
)
async def test_stop_reason_mapping(
    fake: FakeAnthropic, session: aiohttp.ClientSession, vendor: Any, ours: str
) -> None:
    fake.script.stop_reason = vendor
    deltas = await collect(claude(fake, session))
    assert deltas[-1].finish_reason == ours


async def test_refusal_without_text_is_not_empty_output(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "empty"
    fake.script.stop_reason = "refusal"
    deltas = await collect(claude(fake, session))
    assert deltas == [
        ChatDelta(
            "",
            finish_reason="content_filtered",
            usage=TokenUsage(11, 0, 11),
            metadata={"response_id": "msg_fake1"},
        )
    ]


# --- streaming: faults ---------------------------------------------------------------


async def test_vendor_error_messages_are_kept(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "http_529"
    error, _ = await stream_error(claude(fake, session))
    assert error.message == "anthropic/claude-test: Overloaded"
    fake.script.fault = "http_400"
    error, _ = await stream_error(claude(fake, session))
    assert "roles must alternate" in error.message


@pytest.mark.parametrize(
    ("error_type", "category"),
    [
        ("overloaded_error", ErrorCategory.TRANSIENT),
        ("api_error", ErrorCategory.TRANSIENT),
        ("rate_limit_error", ErrorCategory.RATE_LIMITED),
        ("invalid_request_error", ErrorCategory.BAD_REQUEST),
        ("authentication_error", ErrorCategory.AUTH),
        ("permission_error", ErrorCategory.AUTH),
        ("some_new_error", ErrorCategory.TRANSIENT),
    ],
)
async def test_mid_stream_error_event_keeps_earlier_text_and_is_classified(
    fake: FakeAnthropic, session: aiohttp.ClientSession, error_type: str, category: ErrorCategory
) -> None:
    fake.script.fault = "error_event"
    fake.script.fault_after_chunks = 2
    fake.script.error_type = error_type
    error, seen = await stream_error(claude(fake, session))
    assert [d.content for d in seen] == ["Hello", " from"]
    assert error.category is category
    assert error.message == f"anthropic/claude-test: {error_type}: Overloaded"


async def test_truncated_stream_says_why(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "truncated"
    error, seen = await stream_error(claude(fake, session))
    assert [d.content for d in seen] == ["Hello"]
    assert error.message == "anthropic/claude-test: stream ended before message_stop"


async def test_missing_api_key_header_would_be_refused(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    provider = claude(fake, session, api_key="")
    error, _ = await stream_error(provider)
    assert error.category is ErrorCategory.AUTH
    assert "x-api-key header is required" in error.message


# --- wire details a hand-written server covers -------------------------------------------


async def test_events_dispatch_on_type_and_ignore_unknown_ones(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(
            b'event: message_start\r\ndata: {"type":"message_start","message":{"id":"m1",'
            b'"usage":{"input_tokens":3,"output_tokens":1}}}\r\n\r\n'
            b": comment\n\n"
            b'event: brand_new_event\ndata: {"type":"brand_new_event","x":1}\n\n'
            b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
            b'"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}\n\n'
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"input_json_delta","partial_json":"{\\"a\\": 1"}}\n\n'
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
            b'"delta":{"type":"text_delta","text":"ok"}}\n\n'
            b'event: message_delta\ndata: {"type":"message_delta","delta":'
            b'{"stop_reason":"max_tokens"},"usage":{"output_tokens":2}}\n\n'
        )
        await resp.write(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    server = await aiohttp_server(app)
    config = AnthropicConfig(
        base_url=str(server.make_url("")).rstrip("/"), model="m", api_key=SecretStr(KEY)
    )
    deltas = [d async for d in AnthropicProvider(config, ClientConfig(), session).stream(PARAMS)]
    # the tool_use block is call 0 and its input fragment follows; text is text
    assert deltas == [
        ChatDelta("", tool_calls=(ToolCallDelta(0, "t", "f"),)),
        ChatDelta("", tool_calls=(ToolCallDelta(0, arguments='{"a": 1'),)),
        ChatDelta("ok"),
        ChatDelta(
            "",
            finish_reason="max_tokens",
            usage=TokenUsage(3, 2, 5),
            metadata={"response_id": "m1"},
        ),
    ]


async def test_message_stop_without_stop_reason_is_protocol(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"ok"}}\n\n'
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    server = await aiohttp_server(app)
    config = AnthropicConfig(
        base_url=str(server.make_url("")).rstrip("/"), model="m", api_key=SecretStr(KEY)
    )
    with pytest.raises(ProviderError) as caught:
        await collect(AnthropicProvider(config, ClientConfig(), session))
    assert caught.value.category is ErrorCategory.PROTOCOL
    assert caught.value.message == "anthropic/m: stream ended without a stop_reason"
