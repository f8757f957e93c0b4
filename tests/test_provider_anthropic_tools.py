"""Tool calls and images through the Anthropic adapter, against the fake Messages API
(which validates tools, tool_choice, image blocks and tool_use / tool_result pairing)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from config.models import AnthropicConfig, ClientConfig
from fakes.anthropic_server import FakeAnthropic, run_fake_anthropic
from fakes.tool_script import ScriptedCall
from providers.anthropic import AnthropicProvider
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    ImagePart,
    Message,
    ProviderError,
    TextPart,
    ToolChoice,
)
from tests.provider_helpers import collect
from tests.tool_helpers import HISTORY, PNG, TOOLS, assemble, parsed, text_of, tool_params

KEY = "sk-ant-test-0123456789abcdef"
PARIS = ScriptedCall("get_weather", {"city": "Paris", "unit": "C"})
BERLIN = ScriptedCall("get_weather", {"city": "Berlin"}, id="toolu_berlin")


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with run_fake_anthropic() as server:
        yield server


def claude(fake: FakeAnthropic, session: aiohttp.ClientSession) -> AnthropicProvider:
    config = AnthropicConfig(base_url=fake.url, model="claude-test", api_key=SecretStr(KEY))
    return AnthropicProvider(config, ClientConfig(), session)


def test_capabilities_are_declared() -> None:
    assert (AnthropicProvider.tools, AnthropicProvider.images, AnthropicProvider.image_urls) == (
        True,
        True,
        True,
    )


async def test_tools_and_choice_are_sent_in_anthropic_shape(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    await collect(claude(fake, session), tool_params(choice=ToolChoice("function", "get_time")))
    body = fake.stats.last_body
    assert body is not None
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The current weather in a city",
            "input_schema": TOOLS[0].parameters,
        },
        {"name": "get_time", "input_schema": TOOLS[1].parameters},
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "get_time"}


@pytest.mark.parametrize(
    ("choice", "parallel", "wire"),
    [
        (None, None, None),
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("required"), None, {"type": "any"}),
        (ToolChoice("none"), None, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
async def test_tool_choice_modes(
    fake: FakeAnthropic,
    session: aiohttp.ClientSession,
    choice: ToolChoice | None,
    parallel: bool | None,
    wire: dict[str, Any] | None,
) -> None:
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    await collect(claude(fake, session), tool_params(choice=choice, params=extra))
    body = fake.stats.last_body
    assert body is not None
    assert body.get("tool_choice") == wire
    assert "parallel_tool_calls" not in body


async def test_history_with_calls_results_and_an_image(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    deltas = await collect(claude(fake, session), tool_params(HISTORY))
    assert deltas[-1].finish_reason == "complete"
    body = fake.stats.last_body
    assert body is not None
    assert body["system"] == "be brief"
    assert body["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "call_a",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {"tz": "CET"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "18C and sunny"},
                {"type": "tool_result", "tool_use_id": "call_b", "content": "14:05"},
            ],
        },
        {"role": "assistant", "content": "It is 18C and 14:05."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this picture?"},
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": base64.b64encode(PNG).decode(),
                    },
                },
            ],
        },
    ]


async def test_a_user_turn_after_results_keeps_the_results_first(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    messages = (*HISTORY[1:5], Message("user", "in Celsius please"))
    await collect(claude(fake, session), tool_params(messages))
    body = fake.stats.last_body
    assert body is not None
    assert [block["type"] for block in body["messages"][-1]["content"]] == [
        "tool_result",
        "tool_result",
        "text",
    ]


async def test_https_image_goes_as_a_url_source(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    image = ImagePart(url="https://example.com/cat.png")
    params = ChatParams(messages=(Message("user", "cat?", parts=(TextPart("cat?"), image)),))
    await collect(claude(fake, session), params)
    body = fake.stats.last_body
    assert body is not None
    assert body["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


async def test_an_image_type_anthropic_lacks_is_refused_before_sending(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    image = ImagePart("image/tiff", b"II*\x00")
    params = ChatParams(messages=(Message("user", "?", parts=(image,)),))
    with pytest.raises(ProviderError) as caught:
        await collect(claude(fake, session), params)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "Anthropic" in caught.value.message and "image/tiff" in caught.value.message
    assert fake.stats.requests == 0


async def test_a_result_for_no_call_is_the_vendors_400(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    params = tool_params((Message("user", "hi"), Message("tool", "42", tool_call_id="nope")))
    with pytest.raises(ProviderError) as caught:
        await collect(claude(fake, session), params)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "tool_use" in caught.value.message


async def test_streamed_parallel_calls_come_out_as_fragments(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = ["Checking", " both."]
    fake.script.tool_calls = [PARIS, BERLIN]
    deltas = await collect(claude(fake, session), tool_params())
    assert text_of(deltas) == "Checking both."
    firsts = [piece for d in deltas for piece in d.tool_calls if piece.id is not None]
    assert [(p.index, p.id, p.name, p.arguments) for p in firsts] == [
        (0, "toolu_fake0", "get_weather", ""),
        (1, "toolu_berlin", "get_weather", ""),
    ]
    fragments = [p for d in deltas for p in d.tool_calls if p.id is None]
    assert len(fragments) > 2  # arguments arrive in pieces, not whole
    calls = assemble(deltas)
    assert parsed(calls) == [
        ("get_weather", {"city": "Paris", "unit": "C"}),
        ("get_weather", {"city": "Berlin"}),
    ]
    assert deltas[-1].finish_reason == "tool_calls"


async def test_a_tool_only_answer_is_not_empty_output(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = []
    fake.script.tool_calls = [ScriptedCall("get_time")]
    deltas = await collect(claude(fake, session), tool_params())
    assert text_of(deltas) == ""
    assert parsed(assemble(deltas)) == [("get_time", {})]
    assert deltas[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("fault", "category"),
    [
        ("truncated", ErrorCategory.PROTOCOL),
        ("error_event", ErrorCategory.TRANSIENT),
        ("malformed", ErrorCategory.PROTOCOL),
    ],
)
async def test_a_fault_inside_a_call_is_retryable(
    fake: FakeAnthropic, session: aiohttp.ClientSession, fault: Any, category: ErrorCategory
) -> None:
    fake.script.tool_calls = [PARIS, BERLIN]
    fake.script.fault = fault
    fake.script.fault_in_tool_call = True
    seen: list[ChatDelta] = []
    with pytest.raises(ProviderError) as caught:
        async for delta in claude(fake, session).stream(tool_params()):
            seen.append(delta)
    assert caught.value.category is category
    assert caught.value.retryable
    # the call had begun: its id and a first fragment of arguments were out
    pieces = [p for d in seen for p in d.tool_calls]
    assert pieces[0].id == "toolu_fake0"
    assert len(pieces) == 2 and pieces[1].arguments


async def test_image_jpg_is_read_as_jpeg(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    image = ImagePart("image/jpg", b"\xff\xd8\xff")
    await collect(
        claude(fake, session), ChatParams(messages=(Message("user", "?", parts=(image,)),))
    )
    body = fake.stats.last_body
    assert body is not None
    assert body["messages"][0]["content"][0]["source"]["media_type"] == "image/jpeg"
