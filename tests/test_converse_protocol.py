"""The converse protocol from the client's side: bad input gets a typed error for
that conversation only (the socket and the other conversations live), barge-in over
a real socket, `played`, manual turns, the router listing and 404s."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fakes.openai_server import FakeOpenAI, run_fake_openai
from fakes.stt_servers import FakeStt, run_fake_transcription
from fakes.tts_servers import FakeSpeechServer, run_fake_openai_speech
from protocol.messages import encode_binary
from protocol.schema import validate_server_frame
from tests.conftest import MakeClient, receive_json
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


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeStt, FakeOpenAI, FakeSpeechServer]]:
    async with (
        run_fake_transcription() as stt,
        run_fake_openai() as chat,
        run_fake_openai_speech() as tts,
    ):
        stt.script.text = "tell me a story"
        chat.script.chunks = ["Once upon a time.", " There was a fox.", " The end."]
        yield stt, chat, tts


@pytest.fixture
async def client(sluice: MakeClient, fakes: tuple[FakeStt, FakeOpenAI, FakeSpeechServer]) -> Client:
    stt, chat, tts = fakes
    config = agent_config(
        [stt_model("stt", stt.url)], [chat_model("chat", chat.url)], [tts_model("tts", tts.url)]
    )
    return await sluice(config)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"format": {"encoding": "pcm_s16le"}}, "unsupported_format"),
        ({"format": {"encoding": "aiff", "sample_rate": 16000}}, "unsupported_format"),
        ({"format": {"sample_rate": 16000}, "voice": ""}, "payload_parse_error"),
        (
            {"format": {"sample_rate": 16000}, "output_format": {"encoding": "mp3"}},
            "payload_parse_error",
        ),
        ({}, "payload_parse_error"),
    ],
)
async def test_a_bad_converse_message_ends_that_conversation_only(
    client: Client, body: dict[str, Any], name: str
) -> None:
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(json.dumps({"type": "converse", "request_id": "bad", **body}))
        frame = await receive_json(ws)
        assert frame["request_id"] == "bad" and frame["error"]["name"] == name, frame
        assert frame["error"]["finish_reason"] == "error"
        # the socket lives: a good conversation on it works
        await ws.send_str(start_message("good"))
        await ws.send_str(json.dumps({"type": "text", "request_id": "good", "text": "hi"}))
        await ws.send_str(json.dumps({"type": "end", "request_id": "good"}))
        talk = await read_conversation(ws, Conversation(), "good")
    assert talk.frames[-1]["type"] == "done"


async def test_bad_later_messages_get_non_terminal_errors(client: Client) -> None:
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(json.dumps({"type": "played", "request_id": "x", "ms": 5}))
        unknown = await receive_json(ws)
        assert unknown["error"]["name"] == "unknown_request"
        assert "finish_reason" not in unknown["error"]
        await ws.send_str(start_message("c1"))
        for message in (
            {"type": "played", "ms": -1},
            {"type": "text", "text": ""},
            {"type": "dance"},
            {"type": "converse", "format": {"sample_rate": 16000}},
            {"type": "commit"},
            {"type": "interrupt"},
        ):
            await ws.send_str(json.dumps({"request_id": "c1", **message}))
        names = []
        for _ in range(6):
            frame = await receive_json(ws)
            assert "finish_reason" not in frame["error"], frame
            names.append(frame["error"]["name"])
        assert names == [
            "invalid_request",
            "invalid_request",
            "unsupported_message_type",
            "duplicate_request_id",
            "audio_buffer_empty",
            "no_active_reply",
        ]
        await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
        talk = await read_conversation(ws, Conversation(), "c1")
    assert talk.frames[-1]["type"] == "done"


async def test_barge_in_over_the_socket_interrupts_the_reply(
    client: Client, fakes: tuple[FakeStt, FakeOpenAI, FakeSpeechServer]
) -> None:
    _, chat, tts = fakes
    tts.script.delay = 0.05  # 20 ms of audio every 50 ms: the reply is still playing
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(start_message("c1"))
        await send_audio(ws, "c1", user_speech())
        talk = await read_conversation(
            ws, Conversation(), "c1", until=lambda c: bool(c.of_type("segment"))
        )
        # the first sentence (170 ms of audio) is out; the client has played 100 ms
        await ws.send_str(json.dumps({"type": "played", "request_id": "c1", "ms": 100}))
        await send_audio(ws, "c1", user_speech("stop"))
        await read_conversation(
            ws, talk, "c1", until=lambda c: bool(c.of_type("reply_interrupted"))
        )
        interrupted = talk.of_type("reply_interrupted")[0]
        # the client drops the reply audio after `kept_bytes`
        assert interrupted["reason"] == "barge_in"
        assert interrupted["kept_ms"] == 100 and interrupted["kept_bytes"] == 4800
        assert interrupted["text"] == "Once upon"  # 100 of the sentence's 170 ms
        at = talk.audio_at_frame[talk.frames.index(interrupted)]
        assert interrupted["sent_bytes"] == at
        await read_conversation(ws, talk, "c1", until=lambda c: len(c.of_type("turn_ended")) == 2)
        await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
        await read_conversation(ws, talk, "c1")
    for frame in talk.frames:
        validate_server_frame("converse", frame)
    first, second = talk.of_type("turn_ended")
    assert first["reason"] == "interrupted" and first["reply_text"] == interrupted["text"]
    assert chat.stats.last_body is not None
    history = chat.stats.last_body["messages"]
    assert history[-2]["role"] == "assistant"
    assert history[-2]["content"] == interrupted["text"]  # only what was heard
    assert second["reason"] == "complete"
    await tts.stats.wait_stream_closed()  # the interrupted sentence's TTS call was cancelled


async def test_manual_turns_over_the_socket(client: Client) -> None:
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(start_message("c1", turn_detection=False))
        await send_audio(ws, "c1", user_speech())
        await ws.send_str(json.dumps({"type": "commit", "request_id": "c1"}))
        talk = await read_conversation(
            ws, Conversation(), "c1", until=lambda c: bool(c.of_type("user_turn"))
        )
        assert not talk.of_type("reply_started")
        await ws.send_str(json.dumps({"type": "respond", "request_id": "c1"}))
        await read_conversation(ws, talk, "c1", until=lambda c: bool(c.of_type("turn_ended")))
        await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
        await read_conversation(ws, talk, "c1")
    assert not talk.of_type("speech_started")
    assert talk.of_type("user_turn")[0]["text"] == "tell me a story"
    assert talk.of_type("turn_ended")[0]["reason"] == "complete"


async def test_audio_after_end_and_binary_for_unknown_conversations(client: Client) -> None:
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_bytes(encode_binary("ghost", b"\x00\x00" * 160))
        frame = await receive_json(ws)
        assert frame["request_id"] == "ghost"
        assert frame["error"]["name"] == "unknown_request", frame


async def test_listing_and_unknown_router(client: Client) -> None:
    listing = await (await client.get("/v1/agent/")).json()
    assert listing == {
        "routers": [
            {
                "id": "talk",
                "listen": "sp",
                "chat": "lm",
                "speak": "sp",
                "voice": None,
                "turn": {
                    "max_history_messages": 20,
                    "turn_detection": True,
                    "interim_results": True,
                    "language": None,
                },
            }
        ]
    }
    response = await client.get("/v1/agent/nope/converse")
    assert response.status == 404
    assert (await response.json())["name"] == "router_not_found"
