"""Tool calls and images through the Bedrock Converse adapter, against the fake Bedrock
runtime (which validates toolConfig, image blocks and toolUse / toolResult pairing)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from config.models import BedrockConfig, ClientConfig
from fakes.bedrock_server import FakeBedrock, run_fake_bedrock
from fakes.tool_script import ScriptedCall
from providers.bedrock import BedrockProvider
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

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY"
PARIS = ScriptedCall("get_weather", {"city": "Paris", "unit": "C"})
BERLIN = ScriptedCall("get_weather", {"city": "Berlin"}, id="tooluse_berlin")


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrock]:
    async with run_fake_bedrock() as server:
        server.script.secret_access_key = SECRET
        yield server


def bedrock(fake: FakeBedrock, session: aiohttp.ClientSession) -> BedrockProvider:
    config = BedrockConfig(
        base_url=fake.url,
        region="eu-west-3",
        model="anthropic.claude-3-haiku-20240307-v1:0",
        access_key_id=SecretStr("AKIDFAKEEXAMPLE12345"),
        secret_access_key=SecretStr(SECRET),
    )
    return BedrockProvider(config, ClientConfig(), session)


def test_capabilities_are_declared() -> None:
    assert (BedrockProvider.tools, BedrockProvider.images, BedrockProvider.image_urls) == (
        True,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (None, None),
        (ToolChoice("auto"), {"auto": {}}),
        (ToolChoice("required"), {"any": {}}),
        (ToolChoice("function", "get_time"), {"tool": {"name": "get_time"}}),
    ],
)
async def test_tool_config_in_converse_shape(
    fake: FakeBedrock,
    session: aiohttp.ClientSession,
    choice: ToolChoice | None,
    wire: dict[str, Any] | None,
) -> None:
    await collect(bedrock(fake, session), tool_params(choice=choice))
    body = fake.stats.last_body
    assert body is not None
    assert body["toolConfig"]["tools"] == [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "The current weather in a city",
                "inputSchema": {"json": TOOLS[0].parameters},
            }
        },
        {"toolSpec": {"name": "get_time", "inputSchema": {"json": TOOLS[1].parameters}}},
    ]
    assert body["toolConfig"].get("toolChoice") == wire


async def test_choice_none_sends_no_tools_without_tool_history(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    await collect(
        bedrock(fake, session), tool_params(choice=ToolChoice("none"), params={"toolConfig": {}})
    )
    body = fake.stats.last_body
    assert body is not None
    assert "toolConfig" not in body


async def test_choice_none_with_tool_history_is_refused_naming_bedrock(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ProviderError) as caught:
        await collect(bedrock(fake, session), tool_params(HISTORY, ToolChoice("none")))
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "Bedrock" in caught.value.message and "none" in caught.value.message
    assert fake.stats.requests == 0


async def test_history_with_calls_results_and_an_image(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    deltas = await collect(bedrock(fake, session), tool_params(HISTORY))
    assert deltas[-1].finish_reason == "complete"
    body = fake.stats.last_body
    assert body is not None
    assert body["system"] == [{"text": "be brief"}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Weather and time in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"text": "Let me look."},
                {
                    "toolUse": {
                        "toolUseId": "call_a",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                },
                {"toolUse": {"toolUseId": "call_b", "name": "get_time", "input": {"tz": "CET"}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_a", "content": [{"text": "18C and sunny"}]}},
                {"toolResult": {"toolUseId": "call_b", "content": [{"text": "14:05"}]}},
            ],
        },
        {"role": "assistant", "content": [{"text": "It is 18C and 14:05."}]},
        {
            "role": "user",
            "content": [
                {"text": "And this picture?"},
                {
                    "image": {
                        "format": "png",
                        "source": {"bytes": base64.b64encode(PNG).decode()},
                    }
                },
            ],
        },
    ]


async def test_an_empty_result_is_an_empty_json_block(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    messages = (*HISTORY[1:4], Message("tool", "", tool_call_id="call_b"))
    await collect(bedrock(fake, session), tool_params(messages))
    body = fake.stats.last_body
    assert body is not None
    assert body["messages"][-1]["content"][1] == {
        "toolResult": {"toolUseId": "call_b", "content": [{"json": {}}]}
    }


async def test_an_unanswered_call_is_the_vendors_validation_error(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ProviderError) as caught:
        await collect(bedrock(fake, session), tool_params(HISTORY[1:4]))
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "call_b" in caught.value.message


async def test_an_image_url_is_refused_before_sending(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    image = ImagePart(url="https://example.com/cat.png")
    params = ChatParams(messages=(Message("user", "cat?", parts=(TextPart("cat?"), image)),))
    with pytest.raises(ProviderError) as caught:
        await collect(bedrock(fake, session), params)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert "Bedrock" in caught.value.message and "URL" in caught.value.message
    assert fake.stats.requests == 0


async def test_streamed_parallel_calls_come_out_as_fragments(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = ["Checking", " both."]
    fake.script.tool_calls = [PARIS, BERLIN]
    deltas = await collect(bedrock(fake, session), tool_params())
    assert text_of(deltas) == "Checking both."
    firsts = [piece for d in deltas for piece in d.tool_calls if piece.id is not None]
    assert [(p.index, p.id, p.name) for p in firsts] == [
        (0, "tooluse_fake0", "get_weather"),
        (1, "tooluse_berlin", "get_weather"),
    ]
    assert len([p for d in deltas for p in d.tool_calls if p.id is None]) > 2
    assert parsed(assemble(deltas)) == [
        ("get_weather", {"city": "Paris", "unit": "C"}),
        ("get_weather", {"city": "Berlin"}),
    ]
    assert deltas[-1].finish_reason == "tool_calls"


async def test_a_call_without_input_has_empty_object_arguments(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    fake.script.chunks = []
    fake.script.tool_calls = [ScriptedCall("get_time")]
    deltas = await collect(bedrock(fake, session), tool_params())
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
    fake: FakeBedrock, session: aiohttp.ClientSession, fault: Any, category: ErrorCategory
) -> None:
    fake.script.tool_calls = [PARIS, BERLIN]
    fake.script.fault = fault
    fake.script.fault_in_tool_call = True
    seen: list[ChatDelta] = []
    with pytest.raises(ProviderError) as caught:
        async for delta in bedrock(fake, session).stream(tool_params()):
            seen.append(delta)
    assert caught.value.category is category
    assert caught.value.retryable
    pieces = [p for d in seen for p in d.tool_calls]
    assert pieces[0].id == "tooluse_fake0"
    assert len(pieces) == 2 and pieces[1].arguments


async def test_image_jpg_is_a_jpeg_block(fake: FakeBedrock, session: aiohttp.ClientSession) -> None:
    image = ImagePart("image/JPG", b"\xff\xd8\xff")
    await collect(
        bedrock(fake, session), ChatParams(messages=(Message("user", "?", parts=(image,)),))
    )
    body = fake.stats.last_body
    assert body is not None
    assert body["messages"][0]["content"][0]["image"]["format"] == "jpeg"
