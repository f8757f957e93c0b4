"""Tool calls and images through the Cohere v2 adapter, against the fake Cohere API
(which validates v2 tools, tool_choice, image_url parts, tool_calls and tool results);
the v1 mode declares neither and refuses both."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import pytest
from pydantic import SecretStr

from config.models import ClientConfig, CohereConfig
from fakes.cohere_server import FakeCohere, run_fake_cohere
from fakes.tool_script import ScriptedCall
from providers.cohere import CohereProvider
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

PARIS = ScriptedCall("get_weather", {"city": "Paris", "unit": "C"})
BERLIN = ScriptedCall("get_weather", {"city": "Berlin"}, id="get_berlin")


@pytest.fixture
async def fake() -> AsyncIterator[FakeCohere]:
    async with run_fake_cohere() as server:
        yield server


def cohere(
    fake: FakeCohere, session: aiohttp.ClientSession, api: Literal["v1", "v2"] = "v2"
) -> CohereProvider:
    config = CohereConfig(
        base_url=fake.url,
        chat_endpoint=f"/{api}/chat",
        model="command-a",
        api_key=SecretStr("co-test-key-0123456789"),
        api=api,
    )
    return CohereProvider(config, ClientConfig(), session)


def test_capabilities_are_declared_for_v2_only(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    v2, v1 = cohere(fake, session), cohere(fake, session, "v1")
    assert (v2.tools, v2.images, v2.image_urls) == (True, True, True)
    assert (v1.tools, v1.images, v1.image_urls) == (False, False, False)


async def test_v1_refuses_tools_naming_v2(fake: FakeCohere, session: aiohttp.ClientSession) -> None:
    with pytest.raises(ProviderError) as caught:
        await collect(cohere(fake, session, "v1"), tool_params())
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "api: v2" in caught.value.message
    assert fake.stats.requests == 0


@pytest.mark.parametrize(
    ("choice", "wire", "names"),
    [
        (None, None, ["get_weather", "get_time"]),
        (ToolChoice("auto"), None, ["get_weather", "get_time"]),
        (ToolChoice("required"), "REQUIRED", ["get_weather", "get_time"]),
        (ToolChoice("none"), "NONE", ["get_weather", "get_time"]),
        (ToolChoice("function", "get_time"), "REQUIRED", ["get_time"]),
    ],
)
async def test_tools_and_choice_in_v2_shape(
    fake: FakeCohere,
    session: aiohttp.ClientSession,
    choice: ToolChoice | None,
    wire: str | None,
    names: list[str],
) -> None:
    await collect(
        cohere(fake, session), tool_params(choice=choice, params={"parallel_tool_calls": True})
    )
    body = fake.stats.last_body
    assert body is not None
    assert body.get("tool_choice") == wire
    assert [tool["function"]["name"] for tool in body["tools"]] == names
    assert "parallel_tool_calls" not in body
    if choice is None:
        assert body["tools"][0] == {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city",
                "parameters": TOOLS[0].parameters,
            },
        }


async def test_history_with_calls_results_and_an_image(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    detailed = Message(
        "user",
        "And this one?",
        parts=(TextPart("And this one?"), ImagePart(url="https://example.com/a.png", detail="low")),
    )
    deltas = await collect(cohere(fake, session), tool_params((*HISTORY, detailed)))
    assert deltas[-1].finish_reason == "complete"
    body = fake.stats.last_body
    assert body is not None
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "tool_plan": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C and sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
        {"role": "assistant", "content": "It is 18C and 14:05."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this picture?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this one?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/a.png", "detail": "low"},
                },
            ],
        },
    ]


async def test_an_unanswered_call_is_the_vendors_400(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    messages = (*HISTORY[1:4], Message("user", "and?"))
    with pytest.raises(ProviderError) as caught:
        await collect(cohere(fake, session), tool_params(messages))
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "call_b" in caught.value.message


async def test_streamed_parallel_calls_come_out_as_fragments_after_the_plan(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = ["I will check", " both cities."]
    fake.script.tool_calls = [PARIS, BERLIN]
    deltas = await collect(cohere(fake, session), tool_params())
    assert text_of(deltas) == "I will check both cities."
    firsts = [piece for d in deltas for piece in d.tool_calls if piece.id is not None]
    assert [(p.index, p.id, p.name) for p in firsts] == [
        (0, "get_fake0", "get_weather"),
        (1, "get_berlin", "get_weather"),
    ]
    assert len([p for d in deltas for p in d.tool_calls if p.id is None]) > 2
    assert parsed(assemble(deltas)) == [
        ("get_weather", {"city": "Paris", "unit": "C"}),
        ("get_weather", {"city": "Berlin"}),
    ]
    assert deltas[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("fault", "category"),
    [("truncated", ErrorCategory.PROTOCOL), ("malformed", ErrorCategory.PROTOCOL)],
)
async def test_a_fault_inside_a_call_is_retryable(
    fake: FakeCohere, session: aiohttp.ClientSession, fault: Any, category: ErrorCategory
) -> None:
    fake.script.tool_calls = [PARIS, BERLIN]
    fake.script.fault = fault
    fake.script.fault_in_tool_call = True
    seen: list[ChatDelta] = []
    with pytest.raises(ProviderError) as caught:
        async for delta in cohere(fake, session).stream(tool_params()):
            seen.append(delta)
    assert caught.value.category is category
    assert caught.value.retryable
    pieces = [p for d in seen for p in d.tool_calls]
    assert pieces[0].id == "get_fake0"
    assert len(pieces) == 2 and pieces[1].arguments


async def test_a_generation_error_inside_a_call_is_retryable(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    fake.script.tool_calls = [PARIS]
    fake.script.fault = "error_event"
    fake.script.fault_in_tool_call = True
    with pytest.raises(ProviderError) as caught:
        await collect(cohere(fake, session), tool_params())
    assert caught.value.category is ErrorCategory.TRANSIENT
    assert caught.value.retryable


async def test_plain_text_without_tools_is_unchanged(
    fake: FakeCohere, session: aiohttp.ClientSession
) -> None:
    deltas = await collect(cohere(fake, session), ChatParams(messages=(Message("user", "hi"),)))
    assert text_of(deltas) == "Hello from fake"
    assert deltas[-1].finish_reason == "complete"
    assert not [p for d in deltas for p in d.tool_calls]
