"""Failover at every stage of a conversation, with fakes on loopback: a listen model
that fails or stays silent past its deadline, a chat model that refuses or breaks
mid-answer, a speak model that breaks inside a sentence. Each stage keeps its own
router's semantics; the conversation goes on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
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


@dataclass
class Fakes:
    stt: list[FakeStt]
    chat: list[FakeOpenAI]
    tts: list[FakeSpeechServer]


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    async with (
        run_fake_transcription() as stt_a,
        run_fake_transcription() as stt_b,
        run_fake_openai() as chat_a,
        run_fake_openai() as chat_b,
        run_fake_openai_speech() as tts_a,
        run_fake_openai_speech() as tts_b,
    ):
        stt_a.script.text = stt_b.script.text = "what time is it"
        chat_a.script.chunks = ["It is", " noon.", " Bye."]
        chat_b.script.chunks = ["Backup", " says noon.", " Bye."]
        yield Fakes([stt_a, stt_b], [chat_a, chat_b], [tts_a, tts_b])


@pytest.fixture
async def client(sluice: MakeClient, fakes: Fakes) -> Client:
    config = agent_config(
        [stt_model("stt-a", fakes.stt[0].url), stt_model("stt-b", fakes.stt[1].url)],
        [chat_model("chat-a", fakes.chat[0].url), chat_model("chat-b", fakes.chat[1].url)],
        [tts_model("tts-a", fakes.tts[0].url), tts_model("tts-b", fakes.tts[1].url)],
    )
    return await sluice(config)


async def one_turn(client: Client) -> Conversation:
    """Speak once, read until the turn ended, end the conversation: what the client saw."""
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(start_message("c1"))
        await send_audio(ws, "c1", user_speech())
        talk = await read_conversation(
            ws, Conversation(), "c1", until=lambda c: bool(c.of_type("turn_ended"))
        )
        await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
        return await read_conversation(ws, talk, "c1")


def finals(talk: Conversation) -> list[dict[str, Any]]:
    return [f for f in talk.of_type("transcript") if f["is_final"]]


@pytest.mark.parametrize("fault", ["http_500", "stall"])
async def test_a_failing_or_silent_listen_model_fails_over(
    client: Client, fakes: Fakes, fault: str
) -> None:
    fakes.stt[0].script.fault = fault  # type: ignore[assignment]
    talk = await one_turn(client)
    assert [f["model_id"] for f in finals(talk)] == ["stt-b"]
    assert talk.of_type("user_turn")[0]["text"] == "what time is it"
    assert talk.of_type("turn_ended")[0]["reason"] == "complete"
    assert talk.frames[-1]["type"] == "done"


async def test_a_chat_model_that_refuses_fails_over_silently(client: Client, fakes: Fakes) -> None:
    fakes.chat[0].script.fault = "http_500"
    talk = await one_turn(client)
    assert {f["model_id"] for f in talk.of_type("reply_text")} == {"chat-b"}
    assert not [f for f in talk.of_type("error") if f["error"].get("stage") == "chat"]
    assert talk.of_type("turn_ended")[0]["reply_text"] == "Backup says noon. Bye."


async def test_a_chat_model_broken_mid_answer_goes_on_from_the_next(
    client: Client, fakes: Fakes
) -> None:
    fakes.chat[0].script.fault = "stall_mid_stream"
    fakes.chat[0].script.fault_after_chunks = 1
    talk = await one_turn(client)
    notices = [f["error"] for f in talk.of_type("error") if f["error"].get("stage") == "chat"]
    assert [(n["name"], n["model_id"]) for n in notices] == [("model_unavailable", "chat-a")]
    # "It is" was passed on; the restarted answer is skipped for as many characters
    said = "".join(f["delta"] for f in talk.of_type("reply_text"))
    assert said == "It is" + "Backup says noon. Bye."[len("It is") :]
    assert talk.of_type("turn_ended")[0]["reason"] == "complete"


async def test_a_speak_model_broken_inside_a_sentence_drops_only_that_audio(
    client: Client, fakes: Fakes
) -> None:
    fakes.tts[0].script.faults = ["none", "fail_mid_stream"]
    talk = await one_turn(client)
    notices = [f["error"] for f in talk.of_type("error") if f["error"].get("stage") == "speak"]
    assert [(n["model_id"], n["drop_bytes"] > 0) for n in notices] == [("tts-a", True)]
    segments = [f["segment"] for f in talk.of_type("segment")]
    assert [(s["text"], s["model_id"]) for s in segments] == [
        ("It is noon.", "tts-a"),
        ("Bye.", "tts-b"),
    ]
    for frame in talk.frames:
        validate_server_frame("converse", frame)
    kept = len(talk.audio) - notices[0]["drop_bytes"]
    assert kept == sum(expected_bytes(s["text"], 24000) for s in segments)


async def test_every_chat_model_failing_ends_the_turn_not_the_conversation(
    client: Client, fakes: Fakes
) -> None:
    fakes.chat[0].script.fault = fakes.chat[1].script.fault = "http_500"
    async with client.ws_connect("/v1/agent/talk/converse") as ws:
        await ws.send_str(start_message("c1"))
        await ws.send_str(json.dumps({"type": "text", "request_id": "c1", "text": "hi"}))
        talk = await read_conversation(
            ws, Conversation(), "c1", until=lambda c: bool(c.of_type("turn_ended"))
        )
        ended = talk.of_type("turn_ended")[0]
        assert ended["reason"] == "error"
        assert ended["error"]["name"] == "all_models_unavailable"
        fakes.chat[1].script.fault = "none"
        await ws.send_str(json.dumps({"type": "text", "request_id": "c1", "text": "again"}))
        await read_conversation(ws, talk, "c1", until=lambda c: len(c.of_type("turn_ended")) == 2)
        await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
        await read_conversation(ws, talk, "c1")
    assert talk.of_type("turn_ended")[1]["reason"] == "complete"
    assert talk.frames[-1]["type"] == "done"


async def test_every_listen_model_failing_ends_the_conversation(
    client: Client, fakes: Fakes
) -> None:
    fakes.stt[0].script.fault = fakes.stt[1].script.fault = "http_500"
    talk = await one_turn(client)
    last = talk.frames[-1]
    assert last["type"] == "error" and last["error"]["name"] == "all_models_unavailable"
    assert last["error"]["finish_reason"] == "error"
