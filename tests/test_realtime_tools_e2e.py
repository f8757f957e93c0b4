"""Function calls on GET /v1/realtime with the `openai` package's realtime client,
unmodified: `session.update` with tools, a response that calls one, the client's
`function_call_output` and the `response.create` that answers from it. The fake OpenAI
chat upstream is scripted to call the tool; every server event is checked against
the package's types (GA and beta)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openai import AsyncOpenAI

from fakes.openai_server import FakeOpenAI, FakeToolCall, run_fake_openai
from fakes.stt_servers import run_fake_transcription
from fakes.tts_servers import FakeSpeechServer, run_fake_openai_speech
from tests.conftest import MakeClient
from tests.converse_helpers import agent_config, chat_model, stt_model, tts_model
from tests.realtime_helpers import BETA, GA, Events, audio_of, of_type, sdk

Client = TestClient[Any, Any]
ARGS = '{"city": "Paris"}'
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
async def chat() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        fake.script.chunks = ["It is", " sunny."]
        fake.script.tool_preamble = ["Let me", " check."]
        fake.script.tool_calls = [FakeToolCall("get_weather", ARGS, id="call_w")]
        yield fake


@pytest.fixture
async def tts() -> AsyncIterator[FakeSpeechServer]:
    async with run_fake_openai_speech() as fake:
        yield fake


@pytest.fixture
async def client(
    sluice: MakeClient, chat: FakeOpenAI, tts: FakeSpeechServer
) -> AsyncIterator[Client]:
    async with run_fake_transcription() as stt:
        config = agent_config(
            [stt_model("stt", stt.url)], [chat_model("chat", chat.url)], [tts_model("tts", tts.url)]
        )
        yield await sluice(config)


async def ask(connection: Any, text: str) -> None:
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await connection.response.create()


async def test_a_function_call_loop_with_the_sdks_client(
    client: Client, chat: FakeOpenAI, tts: FakeSpeechServer
) -> None:
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        await connection.session.update(
            session={"type": "realtime", "tools": [TOOL], "tool_choice": "auto"}
        )
        updated = await events.read(connection, of_type("session.updated"))
        await ask(connection, "Weather in Paris?")
        first = await events.read(connection, of_type("response.done"))
        # an output for a call that was never made is refused; the session lives
        await connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": "nope", "output": "x"}
        )
        refused = await events.read(connection, of_type("error"))
        await connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": "call_w", "output": '{"sky": "sun"}'}
        )
        output_item = await events.read(connection, of_type("conversation.item.created"))
        await connection.response.create()
        second = await events.read(connection, of_type("response.done"))
    assert updated["session"]["tools"] == [TOOL]
    assert updated["session"]["tool_choice"] == "auto"
    # the first response: the spoken preamble, then the function call item
    message, call = first["response"]["output"]
    assert first["response"]["status"] == "completed"
    assert message["content"][0]["transcript"] == "Let me check."
    assert call == {
        "id": call["id"],
        "object": "realtime.item",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_w",
        "name": "get_weather",
        "arguments": ARGS,
    }
    added = [e for e in events.of("response.output_item.added") if e["output_index"] == 1]
    assert added[0]["item"]["type"] == "function_call" and added[0]["item"]["arguments"] == ""
    deltas = events.of("response.function_call_arguments.delta")
    assert "".join(e["delta"] for e in deltas) == ARGS
    (done,) = events.of("response.function_call_arguments.done")
    assert (done["call_id"], done["name"], done["arguments"], done["item_id"]) == (
        "call_w",
        "get_weather",
        ARGS,
        call["id"],
    )
    kinds = events.kinds()
    first_done = kinds.index("response.done")
    assert (
        kinds.index("response.function_call_arguments.delta")
        < kinds.index("response.function_call_arguments.done")
        < first_done
    )
    assert refused["error"]["param"] == "item.call_id"
    assert output_item["item"]["type"] == "function_call_output"
    assert output_item["item"]["call_id"] == "call_w"
    # the second response answers from the result
    assert second["response"]["output"][0]["content"][0]["transcript"] == "It is sunny."
    assert len(second["response"]["output"]) == 1
    assert tts.stats.texts == ["Let me check.", "It is sunny."]
    assert audio_of(events)
    assert chat.stats.last_body is not None
    messages = chat.stats.last_body["messages"]
    assert messages[-2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ARGS}
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_w", "content": '{"sky": "sun"}'}
    assert chat.stats.last_body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": TOOL["parameters"],
            },
        }
    ]


async def test_the_beta_client_gets_its_session_shape_and_tool_choice_none(
    client: Client, chat: FakeOpenAI
) -> None:
    events = Events(BETA)
    beta = AsyncOpenAI(
        base_url=str(client.make_url("/v1")),
        websocket_base_url=str(client.make_url("/v1").with_scheme("ws")),
        api_key="sk-anything",
    )
    async with beta.beta.realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        await connection.session.update(session={"tools": [TOOL], "tool_choice": "none"})
        updated = await events.read(connection, of_type("session.updated"))
        await ask(connection, "Weather in Paris?")
        done = await events.read(connection, of_type("response.done"))
    assert updated["session"]["tools"] == [TOOL]
    assert updated["session"]["tool_choice"] == "none"
    assert [item["type"] for item in done["response"]["output"]] == ["message"]
    assert chat.stats.last_body is not None
    assert chat.stats.last_body["tool_choice"] == "none"
    assert json.dumps(done).count("function_call") == 0
