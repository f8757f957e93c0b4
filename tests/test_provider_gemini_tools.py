"""Tool calls and images through the Gemini adapter, against the fake Gemini API (which
validates function declarations against Gemini's schema subset, toolConfig,
inlineData parts and the functionCall / functionResponse pairing)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from config.models import ClientConfig, GeminiConfig
from fakes.gemini_server import FakeGemini, run_fake_gemini
from fakes.tool_script import ScriptedCall
from providers.gemini import GeminiProvider, gemini_schema
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    ImagePart,
    Message,
    ProviderError,
    TextPart,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
)
from tests.provider_helpers import collect
from tests.tool_helpers import HISTORY, PNG, TOOLS, assemble, text_of, tool_params

PARIS = ScriptedCall("get_weather", {"city": "Paris", "unit": "C"})
BERLIN = ScriptedCall("get_weather", {"city": "Berlin"})

PYDANTIC_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "$defs": {
        "Unit": {"type": "string", "enum": ["C", "F"], "title": "Unit"},
        "Place": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "properties": {
        "place": {"$ref": "#/$defs/Place"},
        "unit": {"$ref": "#/$defs/Unit", "default": "C"},
        "email": {"type": "string", "format": "email"},
        "when": {"type": "string", "format": "date-time"},
        "kind": {"const": "forecast"},
        "days": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
        "level": {"type": "integer", "enum": [1, 2, 3], "exclusiveMinimum": 0},
    },
    "required": ["place", "missing"],
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with run_fake_gemini() as server:
        yield server


def gemini(fake: FakeGemini, session: aiohttp.ClientSession) -> GeminiProvider:
    config = GeminiConfig(
        base_url=fake.url, model="gemini-test", api_key=SecretStr("AIzaSy-test-0123456789")
    )
    return GeminiProvider(config, ClientConfig(), session)


def test_capabilities_are_declared() -> None:
    assert (GeminiProvider.tools, GeminiProvider.images, GeminiProvider.image_urls) == (
        True,
        True,
        False,
    )


async def test_tools_become_function_declarations(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    params = ChatParams(
        messages=(Message("user", "hi"),),
        params={"tools": [{"googleSearch": {}}]},
        tools=(*TOOLS, ToolSpec("ping", "no parameters", {"type": "object", "properties": {}})),
    )
    await collect(gemini(fake, session), params)
    body = fake.stats.last_body
    assert body is not None
    assert body["tools"] == [
        {"googleSearch": {}},
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The current weather in a city",
                    "parameters": TOOLS[0].parameters,
                },
                {"name": "get_time", "parameters": TOOLS[1].parameters},
                {"name": "ping", "description": "no parameters"},
            ]
        },
    ]
    assert "toolConfig" not in body


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (ToolChoice("auto"), {"mode": "AUTO"}),
        (ToolChoice("required"), {"mode": "ANY"}),
        (ToolChoice("none"), {"mode": "NONE"}),
        (
            ToolChoice("function", "get_time"),
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
        ),
    ],
)
async def test_tool_choice_becomes_function_calling_config(
    fake: FakeGemini, session: aiohttp.ClientSession, choice: ToolChoice, wire: dict[str, Any]
) -> None:
    await collect(gemini(fake, session), tool_params(choice=choice))
    body = fake.stats.last_body
    assert body is not None
    assert body["toolConfig"] == {"functionCallingConfig": wire}


def test_schema_is_cut_to_geminis_subset() -> None:
    assert gemini_schema(PYDANTIC_SCHEMA) == {
        "type": "object",
        "properties": {
            "place": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "zip": {"type": "string", "nullable": True},
                },
                "required": ["city"],
            },
            "unit": {"type": "string", "enum": ["C", "F"], "title": "Unit", "default": "C"},
            "email": {"type": "string"},
            "when": {"type": "string", "format": "date-time"},
            "kind": {"enum": ["forecast"]},
            "days": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "level": {"type": "integer"},
        },
        "required": ["place"],
    }


async def test_a_pydantic_schema_is_accepted_by_the_fake(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    params = ChatParams(
        messages=(Message("user", "hi"),), tools=(ToolSpec("forecast", None, PYDANTIC_SCHEMA),)
    )
    deltas = await collect(gemini(fake, session), params)
    assert deltas[-1].finish_reason == "complete"


async def test_the_fake_refuses_keys_outside_the_subset(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    # the fake is strict, as Gemini is: a raw schema sent as a param is refused
    declaration = {"name": "f", "parameters": PYDANTIC_SCHEMA}
    params = ChatParams(
        messages=(Message("user", "hi"),),
        params={"tools": [{"functionDeclarations": [declaration]}]},
    )
    with pytest.raises(ProviderError) as caught:
        await collect(gemini(fake, session), params)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "Unknown name" in caught.value.message


async def test_history_with_calls_results_and_an_image(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    messages = (
        *HISTORY[:3],
        Message("tool", '{"temp": 18, "sky": "sunny"}', tool_call_id="call_a"),
        *HISTORY[4:],
    )
    deltas = await collect(gemini(fake, session), tool_params(messages))
    assert deltas[-1].finish_reason == "complete"
    body = fake.stats.last_body
    assert body is not None
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather and time in Paris?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Let me look."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"temp": 18, "sky": "sunny"},
                    }
                },
                {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}}},
            ],
        },
        {"role": "model", "parts": [{"text": "It is 18C and 14:05."}]},
        {
            "role": "user",
            "parts": [
                {"text": "And this picture?"},
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
            ],
        },
    ]


async def test_a_result_for_no_call_is_refused_before_sending(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    params = tool_params((Message("user", "hi"), Message("tool", "42", tool_call_id="nope")))
    with pytest.raises(ProviderError) as caught:
        await collect(gemini(fake, session), params)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "Gemini" in caught.value.message and "nope" in caught.value.message
    assert fake.stats.requests == 0


async def test_a_missing_result_is_the_vendors_400(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ProviderError) as caught:
        await collect(gemini(fake, session), tool_params(HISTORY[1:4]))
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "number of function response parts" in caught.value.message


async def test_an_image_url_is_refused_before_sending(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    image = ImagePart(url="https://example.com/cat.png")
    params = ChatParams(messages=(Message("user", "cat?", parts=(TextPart("cat?"), image)),))
    with pytest.raises(ProviderError) as caught:
        await collect(gemini(fake, session), params)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "Gemini" in caught.value.message and "URL" in caught.value.message
    assert fake.stats.requests == 0


async def test_streamed_parallel_calls_are_whole_fragments_with_made_up_ids(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = ["Checking both."]
    fake.script.tool_calls = [PARIS, BERLIN]
    deltas = await collect(gemini(fake, session), tool_params())
    assert text_of(deltas) == "Checking both."
    pieces = [piece for d in deltas for piece in d.tool_calls]
    assert pieces == [
        ToolCallDelta(0, "call_fake-response-1_0", "get_weather", '{"city":"Paris","unit":"C"}'),
        ToolCallDelta(1, "call_fake-response-1_1", "get_weather", '{"city":"Berlin"}'),
    ]
    assert deltas[-1].finish_reason == "tool_calls"


async def test_a_thought_signature_rides_in_the_id_and_goes_back(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = []
    fake.script.tool_calls = [PARIS]
    fake.script.thought_signature = "CiQBVKhc7sig=="
    deltas = await collect(gemini(fake, session), tool_params())
    (call,) = assemble(deltas)
    assert call.id.endswith("~ts~CiQBVKhc7sig==")
    history = (
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "18C", tool_call_id=call.id),
    )
    fake.script.tool_calls = []
    fake.script.chunks = ["18C in Paris."]
    await collect(gemini(fake, session), tool_params(history))
    body = fake.stats.last_body
    assert body is not None
    assert body["contents"][1]["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "C"}},
            "thoughtSignature": "CiQBVKhc7sig==",
        }
    ]


async def test_a_malformed_function_call_is_retryable(
    fake: FakeGemini, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = []
    fake.script.finish_reason = "MALFORMED_FUNCTION_CALL"
    with pytest.raises(ProviderError) as caught:
        await collect(gemini(fake, session), tool_params())
    assert caught.value.category is ErrorCategory.TRANSIENT
    assert "MALFORMED_FUNCTION_CALL" in caught.value.message


@pytest.mark.parametrize(
    ("fault", "category"),
    [
        ("truncated", ErrorCategory.PROTOCOL),
        ("malformed", ErrorCategory.PROTOCOL),
        ("error_event", ErrorCategory.TRANSIENT),
    ],
)
async def test_a_fault_where_a_call_goes_is_retryable(
    fake: FakeGemini, session: aiohttp.ClientSession, fault: Any, category: ErrorCategory
) -> None:
    fake.script.chunks = ["Checking"]
    fake.script.tool_calls = [PARIS, BERLIN]
    fake.script.fault = fault
    fake.script.fault_in_tool_call = True
    seen: list[ChatDelta] = []
    with pytest.raises(ProviderError) as caught:
        async for delta in gemini(fake, session).stream(tool_params()):
            seen.append(delta)
    assert caught.value.category is category
    assert caught.value.retryable
    assert text_of(seen) == "Checking"
    assert not [p for d in seen for p in d.tool_calls]  # no half call ever comes out
