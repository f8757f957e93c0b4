"""`SluiceClient.converse` (the Python client's conversations) against a real Sluice on
loopback: the user's speech (espeak-ng) heard by a fake STT, answered by a fake chat
model, spoken by a fake TTS, over the converse socket the client opens itself."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sluice_client import AudioFormat as ClientFormat
from sluice_client import (
    Backoff,
    Cancelled,
    ClientOptions,
    ConnectionLost,
    Conversation,
    Done,
    Notice,
    ReplyInterrupted,
    ReplyStarted,
    ReplyText,
    RouterNotFound,
    SluiceClient,
    SluiceError,
    SpeakSegment,
    SpeechEnded,
    SpeechStarted,
    ToolCalls,
    Transcript,
    TurnEnded,
    UserTurn,
)

from fakes.openai_server import FakeOpenAI, FakeToolCall, run_fake_openai
from fakes.stt_servers import FakeStt, run_fake_transcription
from fakes.tts_servers import FakeSpeechServer, expected_bytes, run_fake_openai_speech
from server import build_app
from tests.converse_helpers import agent_config, chat_model, stt_model, tts_model, user_speech

PCM16 = ClientFormat("pcm_s16le", 16000)
OPTIONS = ClientOptions(backoff=Backoff(initial=0.02, maximum=0.2), heartbeat=None)
REPLY = ["It is", " noon.", " Anything", " else?"]
SENTENCES = ["It is noon.", "Anything else?"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


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
async def sluice(
    aiohttp_server: Any, stt: FakeStt, chat: FakeOpenAI, tts: FakeSpeechServer
) -> AsyncIterator[SluiceClient]:
    config = agent_config(
        [stt_model("stt", stt.url)], [chat_model("chat", chat.url)], [tts_model("tts", tts.url)]
    )
    server: TestServer = await aiohttp_server(build_app(config), host="127.0.0.1")
    async with SluiceClient(str(server.make_url("")), options=OPTIONS) as client:
        yield client


async def microphone(audio: bytes, chunk: int = 640) -> AsyncIterator[bytes]:
    """`audio` in 20 ms frames (16 kHz PCM16), as a microphone delivers it."""
    for start in range(0, len(audio), chunk):
        yield audio[start : start + chunk]
        await asyncio.sleep(0)


async def read_until(talk: Conversation, kind: type[Any], into: list[Any]) -> Any:
    """Read the conversation into `into` until an event of `kind` (returned)."""
    async for item in talk:
        into.append(item)
        if isinstance(item, kind):
            return item
    pytest.fail(f"the conversation ended before a {kind.__name__}")


def of(items: list[Any], kind: type[Any]) -> list[Any]:
    return [item for item in items if isinstance(item, kind)]


async def test_spoken_turn_from_an_audio_iterator(sluice: SluiceClient) -> None:
    """Audio in as an async iterator (then `end`): every kind of event out, in order,
    and the reply audio whole."""
    talk = sluice.converse(
        "talk", microphone(user_speech()), format=PCM16, output_sample_rate=24000
    )
    items = [item async for item in talk]
    assert isinstance(items[0], SpeechStarted)
    assert of(items, SpeechEnded)
    finals = [t for t in of(items, Transcript) if t.is_final]
    assert [t.text for t in finals] == ["what time is it"]
    (turn,) = of(items, UserTurn)
    assert turn.turn_id == 1 and turn.text == "what time is it"
    assert of(items, ReplyStarted)[0].turn_id == 1
    replies = of(items, ReplyText)
    assert "".join(r.delta for r in replies) == "".join(REPLY)
    assert {r.model_id for r in replies} == {"chat"}
    segments = of(items, SpeakSegment)
    assert [s.data["text"] for s in segments] == SENTENCES
    assert [s.turn_id for s in segments] == [1, 1] and segments[0].start_ms == 0
    audio = b"".join(i for i in items if isinstance(i, bytes))
    assert len(audio) == sum(expected_bytes(s, 24000) for s in SENTENCES)
    (ended,) = of(items, TurnEnded)
    assert ended.reason == "complete" and ended.reply_text == "".join(REPLY)
    assert ended.user_text == "what time is it" and ended.error_name is None
    done = items[-1]
    assert isinstance(done, Done) and done.usage["turns"] == 1
    kinds = [type(i).__name__ for i in items if not isinstance(i, bytes)]
    assert kinds.index("UserTurn") < kinds.index("ReplyStarted") < kinds.index("TurnEnded")
    assert talk.ended


async def test_push_api_typed_turns_interrupt_played_and_end(
    sluice: SluiceClient, chat: FakeOpenAI
) -> None:
    """The push side: a typed turn, `played` reports, `interrupt` stopping the reply,
    then `end`; the conversation's settings from `converse(...)` reach the chat model."""
    chat.script.delay = 0.3  # the reply takes over a second: time to interrupt it
    items: list[Any] = []
    async with sluice.converse("talk", instructions="Be brief.", output_sample_rate=24000) as talk:
        talk.text("What time is it?")
        await read_until(talk, ReplyText, items)
        talk.played(0)  # nothing heard yet: the history keeps nothing of the reply
        talk.interrupt()
        interrupted = await read_until(talk, ReplyInterrupted, items)
        ended = await read_until(talk, TurnEnded, items)
        chat.script.delay = 0
        talk.text("And now?")
        second = await read_until(talk, TurnEnded, items)
        talk.end()
        async for item in talk:
            items.append(item)
    assert interrupted.reason == "cancelled" and interrupted.kept_bytes == 0
    assert interrupted.turn_id == 1 and interrupted.sent_bytes >= 0
    assert ended.reason == "interrupted" and ended.reply_text == ""
    assert second.reason == "complete" and second.reply_text == "".join(REPLY)
    assert isinstance(items[-1], Done) and items[-1].usage["turns"] == 2
    assert chat.stats.last_body is not None
    messages = chat.stats.last_body["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    # the interrupted reply left nothing in the history (nothing was heard), so the
    # two user turns are one user message
    assert [m["role"] for m in messages[1:]] == ["user"]
    assert "What time is it?" in messages[1]["content"] and "And now?" in messages[1]["content"]


async def test_tool_calls_and_results(sluice: SluiceClient, chat: FakeOpenAI) -> None:
    chat.script.chunks = ["It is", " sunny."]
    chat.script.tool_preamble = ["Let me", " check."]
    chat.script.tool_calls = [FakeToolCall("get_weather", '{"city": "Paris"}', id="call_w")]
    items: list[Any] = []
    async with sluice.converse("talk", tools=[WEATHER], tool_choice="auto") as talk:
        talk.text("Weather in Paris?")
        calls = await read_until(talk, ToolCalls, items)
        first = await read_until(talk, TurnEnded, items)
        talk.tool_result("nope", "x")  # not a call of the last reply
        notice = await read_until(talk, Notice, items)
        talk.tool_result("call_w", '{"sky": "sunny"}')
        second = await read_until(talk, TurnEnded, items)
        talk.end()
        async for item in talk:
            items.append(item)
    assert calls.turn_id == 1 and calls.model_id == "chat"
    assert [c["function"]["name"] for c in calls.calls] == ["get_weather"]
    assert calls.calls[0]["id"] == "call_w"
    assert first.reply_text == "Let me check."
    assert notice.name == "unknown_tool_call"
    assert (second.turn_id, second.reply_text) == (1, "It is sunny.")
    assert chat.stats.last_body is not None
    messages = chat.stats.last_body["messages"]
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_w", "content": '{"sky": "sunny"}'}


async def test_cancel_ends_one_conversation_and_the_socket_serves_the_others(
    sluice: SluiceClient, chat: FakeOpenAI
) -> None:
    chat.script.delay = 0.3
    first = sluice.converse("talk", request_id="one")
    second = sluice.converse("talk", request_id="two")
    first.text("What time is it?")
    second.text("What time is it?")
    seen: list[Any] = []
    await read_until(first, ReplyText, seen)
    first.cancel()
    with pytest.raises(Cancelled):
        async for item in first:
            seen.append(item)
    assert first.ended
    chat.script.delay = 0
    items: list[Any] = []
    ended = await read_until(second, TurnEnded, items)
    second.end()
    async for item in second:
        items.append(item)
    assert ended.reason == "complete" and ended.reply_text == "".join(REPLY)
    assert isinstance(items[-1], Done)
    assert len(sluice._connections) == 1  # both on the router's one socket


async def test_a_bad_start_raises_its_error_and_the_socket_lives(sluice: SluiceClient) -> None:
    talk = sluice.converse("talk", format=ClientFormat("pcm_s16le", 1234))
    with pytest.raises(SluiceError) as refused:
        async for _ in talk:
            pass
    assert refused.value.name == "unsupported_format" and refused.value.request_id
    with pytest.raises(RouterNotFound):
        async for _ in sluice.converse("nobody"):
            pass
    items: list[Any] = []
    again = sluice.converse("talk")
    again.text("What time is it?")
    again.end()
    async for item in again:
        items.append(item)
    assert isinstance(items[-1], Done)


def cut(client: SluiceClient, router: str) -> None:
    """The network under the router's converse socket drops (no close frame)."""
    current = client.connection(f"/v1/agent/{router}/converse")._current
    assert current is not None
    sock = current.ws.get_extra_info("socket")
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)


async def test_a_cut_socket_resumes_the_conversation(
    sluice: SluiceClient, chat: FakeOpenAI
) -> None:
    """Like every request of the client: a socket lost mid-conversation is reopened
    and the conversation resumed after the last frame it received; every event comes
    once and the conversation goes on on the new socket."""
    chat.script.delay = 0.2
    items: list[Any] = []
    async with sluice.converse("talk", output_sample_rate=24000) as talk:
        talk.text("What time is it?")
        await read_until(talk, ReplyText, items)
        cut(sluice, "talk")
        ended = await read_until(talk, TurnEnded, items)
        chat.script.delay = 0
        talk.text("And now?")
        second = await read_until(talk, TurnEnded, items)
        talk.end()
        async for item in talk:
            items.append(item)
    assert sluice.stats.resumed == 1
    replies = [r.delta for r in of(items, ReplyText) if r.turn_id == 1]
    assert "".join(replies) == "".join(REPLY)  # each piece once
    assert ended.reason == "complete" and ended.reply_text == "".join(REPLY)
    assert second.reason == "complete" and second.turn_id == 2
    audio = b"".join(i for i in items if isinstance(i, bytes))
    assert len(audio) == 2 * sum(expected_bytes(s, 24000) for s in SENTENCES)
    assert isinstance(items[-1], Done) and items[-1].usage["turns"] == 2


async def test_without_resume_a_cut_conversation_raises_connection_lost(
    aiohttp_server: Any, stt: FakeStt, chat: FakeOpenAI, tts: FakeSpeechServer
) -> None:
    config = agent_config(
        [stt_model("stt", stt.url)], [chat_model("chat", chat.url)], [tts_model("tts", tts.url)]
    )
    server: TestServer = await aiohttp_server(build_app(config), host="127.0.0.1")
    chat.script.delay = 0.2
    options = dataclasses.replace(OPTIONS, resume=False)
    async with SluiceClient(str(server.make_url("")), options=options) as client:
        talk = client.converse("talk")
        talk.text("What time is it?")
        await read_until(talk, ReplyText, [])
        cut(client, "talk")
        with pytest.raises(ConnectionLost) as lost:
            async for _ in talk:
                pass
    assert lost.value.retryable
