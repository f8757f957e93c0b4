"""The converse endpoint end to end: a real websocket client against a real server,
with the user's audio (espeak-ng speech) heard by a fake STT, answered by a fake
chat model and spoken by a fake TTS on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fakes.openai_server import FakeOpenAI, run_fake_openai
from fakes.stt_servers import FakeStt, run_fake_transcription
from fakes.tts_servers import FakeSpeechServer, expected_bytes, run_fake_openai_speech
from protocol.schema import validate_server_frame
from tests.conftest import MakeClient
from tests.converse_helpers import (
    Conversation,
    agent_config,
    chat_model,
    read_conversation,
    send_audio,
    start_message,
    stt_model,
    tts_model,
    user_speech,
)

Client = TestClient[Any, Any]
REPLY = ["It is", " noon.", " Anything", " else?"]


@pytest.fixture
async def stt() -> AsyncIterator[FakeStt]:
    async with run_fake_transcription() as fake:
        fake.script.text = "what time is it"
        yield fake


@pytest.fixture
async def chat() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        fake.script.chunks = list(REPLY)
        yield fake


@pytest.fixture
async def tts() -> AsyncIterator[FakeSpeechServer]:
    async with run_fake_openai_speech() as fake:
        yield fake


@pytest.fixture
async def client(
    sluice: MakeClient, stt: FakeStt, chat: FakeOpenAI, tts: FakeSpeechServer
) -> Client:
    config = agent_config(
        [stt_model("stt", stt.url)],
        [chat_model("chat", chat.url)],
        [tts_model("tts", tts.url)],
        instructions="Be brief.",
    )
    return await sluice(config)


async def test_a_spoken_turn_gets_a_spoken_reply(
    client: Client, chat: FakeOpenAI, tts: FakeSpeechServer
) -> None:
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(start_message("c1", metadata={"user": "u1"}))
        await send_audio(ws, "c1", user_speech())
        talk = await read_conversation(
            ws, Conversation(), "c1", until=lambda c: bool(c.of_type("turn_ended"))
        )
        await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
        await read_conversation(ws, talk, "c1")
    kinds = [f["type"] for f in talk.frames]
    assert kinds[0] == "speech_started"
    assert kinds.index("speech_ended") < kinds.index("transcript") < kinds.index("user_turn")
    assert talk.of_type("user_turn")[0]["text"] == "what time is it"
    assert "".join(f["delta"] for f in talk.of_type("reply_text")) == "".join(REPLY)
    segments = [f["segment"] for f in talk.of_type("segment")]
    assert [s["text"] for s in segments] == ["It is noon.", "Anything else?"]
    # every byte of both sentences' audio arrived, resampled from the fake's 24 kHz
    assert len(talk.audio) == sum(expected_bytes(s["text"], 24000) for s in segments)
    assert tts.stats.texts == ["It is noon.", "Anything else?"]
    ended = talk.of_type("turn_ended")[0]
    assert ended["reason"] == "complete" and ended["reply_text"] == "It is noon. Anything else?"
    # the chat model got the instructions and the user's words
    assert chat.stats.last_body is not None
    messages = chat.stats.last_body["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[-1] == {"role": "user", "content": "what time is it"}
    done = talk.frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "complete"
    assert done["usage"]["turns"] == 1
    assert all(f["metadata"] == {"user": "u1"} for f in talk.frames)
    assert all(f["router_id"] == "talk" for f in talk.frames)
    # every frame is what the AsyncAPI document says
    for frame in talk.frames:
        validate_server_frame("converse", frame)


async def test_the_history_carries_earlier_turns(client: Client, chat: FakeOpenAI) -> None:
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(start_message("c1"))
        talk = Conversation()
        for turn in (1, 2):
            await send_audio(ws, "c1", user_speech())
            await read_conversation(
                ws, talk, "c1", until=lambda c, n=turn: len(c.of_type("turn_ended")) == n
            )
        await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
        await read_conversation(ws, talk, "c1")
    assert chat.stats.last_body is not None
    roles = [(m["role"], m["content"]) for m in chat.stats.last_body["messages"]]
    assert roles == [
        ("system", "Be brief."),
        ("user", "what time is it"),
        ("assistant", "It is noon. Anything else?"),
        ("user", "what time is it"),
    ]


async def test_a_typed_turn_is_answered_and_conversations_share_a_socket(
    client: Client,
) -> None:
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(start_message("a"))
        await ws.send_str(start_message("b"))
        await ws.send_str(json.dumps({"type": "text", "request_id": "a", "text": "hi"}))
        await ws.send_str(json.dumps({"type": "end", "request_id": "a"}))
        talk = await read_conversation(ws, Conversation(), "a")
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "b"}))
        other = await read_conversation(ws, Conversation(), "b")
    assert talk.of_type("user_turn")[0]["text"] == "hi"
    assert talk.frames[-1]["type"] == "done"
    assert other.frames[-1]["error"]["finish_reason"] == "cancelled"
