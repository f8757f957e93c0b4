"""The OpenAI SDK runs a tool loop against a router that fails over across two
vendors: the OpenAI-compatible model breaks inside a tool call's arguments, the
Anthropic model (tool_use blocks, input_json_delta) answers; the call reaches the
client whole, once, and the result goes back to Claude as a tool_result block."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from fakes.anthropic_server import run_fake_anthropic
from fakes.openai_server import FakeOpenAI, FakeToolCall
from fakes.tool_script import ScriptedCall
from tests.conftest import FAST_CLIENT, make_config, openai_model
from tests.openai_sdk import MakeClient, openai_app_factory, sdk

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def sluice(aiohttp_client: Any) -> MakeClient:
    return openai_app_factory(aiohttp_client)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_tool_loop_fails_over_from_openai_to_anthropic_inside_a_call(
    sluice: MakeClient, fake_a: FakeOpenAI, stream: bool
) -> None:
    fake_a.script.tool_calls = [FakeToolCall("get_weather", '{"city": "Paris!"}', id="call_a")]
    fake_a.script.fault = "cut_in_tool_call"
    async with run_fake_anthropic() as claude:
        claude.script.tool_calls = [ScriptedCall("get_weather", {"city": "Paris"}, id="toolu_1")]
        claude_model = {
            "id": "claude",
            "client": FAST_CLIENT,
            "anthropic": {"base_url": claude.url, "api_key": "ak-1"},
        }
        client = await sluice(make_config(openai_model("a", fake_a), claude_model))
        ask: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Paris?"}]
        async with sdk(client) as oai:
            if stream:
                chunks = [
                    c
                    async for c in await oai.chat.completions.create(
                        model="r", messages=ask, tools=[WEATHER], stream=True
                    )
                ]
                calls = [
                    t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []
                ]
                assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
                assert {c.model for c in chunks} == {"r/claude"}
                [call] = calls  # one delta: the whole call
                assert call.function is not None
                call_id, name, arguments = call.id, call.function.name, call.function.arguments
            else:
                completion = await oai.chat.completions.create(
                    model="r", messages=ask, tools=[WEATHER]
                )
                assert completion.choices[0].finish_reason == "tool_calls"
                [whole] = completion.choices[0].message.tool_calls or []
                assert whole.type == "function"
                call_id, name, arguments = whole.id, whole.function.name, whole.function.arguments
            assert (call_id, name) == ("toolu_1", "get_weather")
            assert json.loads(arguments or "") == {"city": "Paris"}

            fake_a.script.fault = "http_500"  # the next turn goes to Claude too
            history: list[ChatCompletionMessageParam] = [
                *ask,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": arguments or "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"},
            ]
            claude.script.tool_calls = []
            final = await oai.chat.completions.create(model="r", messages=history, tools=[WEATHER])
        assert final.model == "r/claude"
        assert final.choices[0].finish_reason == "stop"
        sent = claude.stats.last_body
        assert sent is not None
        blocks = [
            b
            for m in sent["messages"]
            for b in (m["content"] if isinstance(m["content"], list) else [])
        ]
        assert {"type": "tool_result", "tool_use_id": "toolu_1"}.items() <= next(
            b for b in blocks if b.get("type") == "tool_result"
        ).items()
