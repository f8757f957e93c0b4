"""Tool calls and images through the Ollama adapter, against the fake Ollama server
(which decodes tools, images, tool_calls and tool messages as Ollama's Go structs do)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from config.models import ClientConfig, OllamaConfig
from fakes.ollama_server import FakeOllama, run_fake_ollama
from fakes.tool_script import ScriptedCall
from providers.ollama import OllamaProvider
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    ImagePart,
    Message,
    ProviderError,
    TextPart,
    ToolCall,
    ToolChoice,
)
from tests.provider_helpers import collect
from tests.tool_helpers import HISTORY, PNG, TOOLS, assemble, parsed, text_of, tool_params

PARIS = ScriptedCall("get_weather", {"city": "Paris", "unit": "C"})
BERLIN = ScriptedCall("get_weather", {"city": "Berlin"}, id="call_berlin")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with run_fake_ollama() as server:
        yield server


def ollama(fake: FakeOllama, session: aiohttp.ClientSession) -> OllamaProvider:
    return OllamaProvider(
        OllamaConfig(base_url=fake.url, model="llama3.2"), ClientConfig(), session
    )


def test_capabilities_are_declared() -> None:
    assert (OllamaProvider.tools, OllamaProvider.images, OllamaProvider.image_urls) == (
        True,
        True,
        False,
    )


async def test_tools_go_in_openais_function_shape(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    await collect(
        ollama(fake, session),
        tool_params(choice=ToolChoice("auto"), params={"parallel_tool_calls": False}),
    )
    body = fake.stats.last_body
    assert body is not None
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": TOOLS[0].parameters,
                "description": "The current weather in a city",
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": TOOLS[1].parameters}},
    ]
    assert "parallel_tool_calls" not in body and "tool_choice" not in body


async def test_choice_none_sends_no_tools(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    await collect(ollama(fake, session), tool_params(HISTORY, ToolChoice("none")))
    body = fake.stats.last_body
    assert body is not None
    assert "tools" not in body


@pytest.mark.parametrize("choice", [ToolChoice("required"), ToolChoice("function", "get_time")])
async def test_a_forced_choice_is_refused_naming_ollama(
    fake: FakeOllama, session: aiohttp.ClientSession, choice: ToolChoice
) -> None:
    with pytest.raises(ProviderError) as caught:
        await collect(ollama(fake, session), tool_params(choice=choice))
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "Ollama has no tool_choice" in caught.value.message
    assert fake.stats.requests == 0


async def test_history_with_calls_results_and_an_image(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    deltas = await collect(ollama(fake, session), tool_params(HISTORY))
    assert deltas[-1].finish_reason == "complete"
    body = fake.stats.last_body
    assert body is not None
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_time", "arguments": {"tz": "CET"}}},
            ],
        },
        {"role": "tool", "content": "18C and sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "14:05", "tool_name": "get_time"},
        {"role": "assistant", "content": "It is 18C and 14:05."},
        {
            "role": "user",
            "content": "And this picture?",
            "images": [base64.b64encode(PNG).decode()],
        },
    ]


async def test_arguments_that_are_not_an_object_are_refused_before_sending(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    bad = Message("assistant", "", tool_calls=(ToolCall("c1", "get_time", "[1, 2]"),))
    with pytest.raises(ProviderError) as caught:
        await collect(ollama(fake, session), tool_params((Message("user", "hi"), bad)))
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "not a JSON object" in caught.value.message
    assert fake.stats.requests == 0


async def test_an_image_url_is_refused_before_sending(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    image = ImagePart(url="https://example.com/cat.png")
    params = ChatParams(messages=(Message("user", "cat?", parts=(TextPart("cat?"), image)),))
    with pytest.raises(ProviderError) as caught:
        await collect(ollama(fake, session), params)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "Ollama" in caught.value.message and "URL" in caught.value.message
    assert fake.stats.requests == 0


async def test_streamed_parallel_calls_are_whole_fragments(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = ["Checking."]
    fake.script.tool_calls = [PARIS, BERLIN]
    deltas = await collect(ollama(fake, session), tool_params())
    assert text_of(deltas) == "Checking."
    pieces = [piece for d in deltas for piece in d.tool_calls]
    assert [(p.index, p.name) for p in pieces] == [(0, "get_weather"), (1, "get_weather")]
    assert pieces[0].id is not None and pieces[0].id.startswith("call_")
    assert pieces[1].id == "call_berlin"  # Ollama's own id when it sends one
    assert parsed(assemble(deltas)) == [
        ("get_weather", {"city": "Paris", "unit": "C"}),
        ("get_weather", {"city": "Berlin"}),
    ]
    assert deltas[-1].finish_reason == "tool_calls"


async def test_made_up_ids_differ_between_answers(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = []
    fake.script.tool_calls = [PARIS]
    first = assemble(await collect(ollama(fake, session), tool_params()))
    second = assemble(await collect(ollama(fake, session), tool_params()))
    assert first[0].id != second[0].id


@pytest.mark.parametrize(
    ("fault", "category"),
    [
        ("truncated", ErrorCategory.PROTOCOL),
        ("malformed", ErrorCategory.PROTOCOL),
        ("error_event", ErrorCategory.TRANSIENT),
    ],
)
async def test_a_fault_where_a_call_goes_is_retryable(
    fake: FakeOllama, session: aiohttp.ClientSession, fault: Any, category: ErrorCategory
) -> None:
    fake.script.chunks = ["Checking."]
    fake.script.tool_calls = [PARIS, BERLIN]
    fake.script.fault = fault
    fake.script.fault_in_tool_call = True
    seen: list[ChatDelta] = []
    with pytest.raises(ProviderError) as caught:
        async for delta in ollama(fake, session).stream(tool_params()):
            seen.append(delta)
    assert caught.value.category is category
    assert caught.value.retryable
    assert text_of(seen) == "Checking."
    assert not [p for d in seen for p in d.tool_calls]


async def test_the_fake_refuses_string_arguments_as_ollama_does(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    # OpenAI's shape (arguments as JSON text) is what a careless translation sends
    call = {"function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}
    body = {
        "model": "llama3.2",
        "messages": [{"role": "assistant", "content": "", "tool_calls": [call]}],
    }
    async with session.post(f"{fake.url}/api/chat", json=body) as resp:
        assert resp.status == 400
        assert "cannot unmarshal string" in (await resp.json())["error"]
