"""Tool calls over the converse websocket: a real client against a real server, the
fake OpenAI chat upstream scripted to call a tool, fake STT and TTS on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fakes.openai_server import FakeOpenAI, FakeToolCall, run_fake_openai
from fakes.stt_servers import run_fake_transcription
from fakes.tts_servers import FakeSpeechServer, expected_bytes, run_fake_openai_speech
from protocol.schema import validate_server_frame
from tests.conftest import MakeClient
from tests.converse_helpers import (
    Conversation,
    agent_config,
    chat_model,
    read_conversation,
    start_message,
    stt_model,
    tts_model,
)

Client = TestClient[Any, Any]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ARGS = '{"city": "Paris"}'


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


def has(kind: str, count: int = 1) -> Any:
    return lambda c: len(c.of_type(kind)) >= count


async def test_a_tool_call_round_trip_over_the_socket(
    client: Client, chat: FakeOpenAI, tts: FakeSpeechServer
) -> None:
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(start_message("c1", tools=[WEATHER], tool_choice="auto"))
        await ws.send_str(json.dumps({"type": "text", "request_id": "c1", "text": "Weather?"}))
        talk = await read_conversation(ws, Conversation(), "c1", until=has("turn_ended"))
        (calls,) = talk.of_type("tool_calls")
        assert calls["calls"] == [
            {
                "id": "call_w",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ARGS},
            }
        ]
        assert calls["model_id"] == "chat" and calls["turn_id"] == 1
        # the text before the call is spoken; the call itself has no audio
        assert [f["segment"]["text"] for f in talk.of_type("segment")] == ["Let me check."]
        assert len(talk.audio) == expected_bytes("Let me check.", 24000)
        # a result for a call nobody made is refused, the conversation goes on
        await ws.send_str(
            json.dumps(
                {"type": "tool_result", "request_id": "c1", "call_id": "nope", "output": "x"}
            )
        )
        await read_conversation(ws, talk, "c1", until=has("error"))
        assert talk.of_type("error")[0]["error"]["name"] == "unknown_tool_call"
        await ws.send_str(
            json.dumps(
                {"type": "tool_result", "request_id": "c1", "call_id": "call_w", "output": "sun"}
            )
        )
        await read_conversation(ws, talk, "c1", until=has("turn_ended", 2))
        await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
        await read_conversation(ws, talk, "c1")
    assert tts.stats.texts == ["Let me check.", "It is sunny."]
    ended = talk.of_type("turn_ended")
    assert [(e["turn_id"], e["reply_text"]) for e in ended] == [
        (1, "Let me check."),
        (1, "It is sunny."),
    ]
    assert chat.stats.last_body is not None
    messages = chat.stats.last_body["messages"]
    assert messages[-2]["role"] == "assistant"
    assert messages[-2]["tool_calls"][0]["id"] == "call_w"
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_w", "content": "sun"}
    assert chat.stats.last_body["tools"][0]["function"]["name"] == "get_weather"
    assert talk.frames[-1]["type"] == "done"
    for frame in talk.frames:
        validate_server_frame("converse", frame)


async def test_bad_tools_are_refused_and_update_can_remove_them(
    client: Client, chat: FakeOpenAI
) -> None:
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(start_message("bad", tools=[{"type": "retrieval"}]))
        refused = await read_conversation(ws, Conversation(), "bad")
        assert refused.frames[-1]["error"]["name"] == "payload_parse_error"
        await ws.send_str(start_message("c2", tools=[WEATHER]))
        await ws.send_str(json.dumps({"type": "update", "request_id": "c2", "tools": []}))
        await ws.send_str(json.dumps({"type": "text", "request_id": "c2", "text": "Weather?"}))
        talk = await read_conversation(ws, Conversation(), "c2", until=has("turn_ended"))
        await ws.send_str(json.dumps({"type": "end", "request_id": "c2"}))
        await read_conversation(ws, talk, "c2")
    assert not talk.of_type("tool_calls")
    assert "".join(f["delta"] for f in talk.of_type("reply_text")) == "It is sunny."
    assert chat.stats.last_body is not None and "tools" not in chat.stats.last_body
