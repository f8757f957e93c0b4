"""GET /v1/realtime end to end with the `openai` package's own realtime client, unmodified:
a real server on loopback, the user's speech (espeak-ng) heard by a fake STT, answered by
a fake chat model, spoken by a fake TTS. Every server event is checked against the
package's types (GA: `openai.types.realtime`; beta: `openai.types.beta.realtime`)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus

from audio.g711 import alaw_decode, ulaw_encode
from audio.resample import resample
from config.models import AuthConfig
from fakes.openai_server import FakeOpenAI, run_fake_openai
from fakes.stt_servers import FakeStt, run_fake_transcription
from fakes.tts_servers import FakeSpeechServer, expected_bytes, run_fake_openai_speech
from security.keys import hash_key
from tests.conftest import MakeClient
from tests.converse_helpers import agent_config, chat_model, stt_model, tts_model, user_speech
from tests.realtime_helpers import BETA, GA, Events, append, audio_of, of_type, sdk, speech_24k

Client = TestClient[Any, Any]
REPLY = ["It is", " noon.", " Anything", " else?"]
SENTENCES = ["It is noon.", "Anything else?"]


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


async def test_committed_audio_gets_a_spoken_response(
    client: Client, chat: FakeOpenAI, tts: FakeSpeechServer
) -> None:
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        created = await events.read(connection, of_type("session.created"))
        assert created["session"]["model"] == "talk"
        assert created["session"]["instructions"] == "Be brief."
        await connection.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "turn_detection": None,
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "coral"},
                },
            }
        )
        updated = await events.read(connection, of_type("session.updated"))
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        assert updated["session"]["audio"]["output"]["voice"] == "coral"
        await append(connection, speech_24k())
        await connection.input_audio_buffer.commit()
        await connection.response.create()
        done = await events.read(connection, of_type("response.done"))
    committed = events.of("input_audio_buffer.committed")[0]
    user_item = events.of("conversation.item.created")[0]["item"]
    assert user_item["id"] == committed["item_id"] and user_item["role"] == "user"
    heard = events.of("conversation.item.input_audio_transcription.completed")[0]
    assert heard["item_id"] == committed["item_id"] and heard["transcript"] == "what time is it"
    response_id = events.of("response.created")[0]["response"]["id"]
    assert done["response"]["id"] == response_id
    assert done["response"]["status"] == "completed"
    transcript = "".join(e["delta"] for e in events.of("response.output_audio_transcript.delta"))
    assert transcript == "".join(REPLY)
    assert events.of("response.output_audio_transcript.done")[0]["transcript"] == transcript
    # the fake speaks 24 kHz PCM: every byte of both sentences arrives, base64 in deltas
    assert len(audio_of(events)) == sum(expected_bytes(s, 24000) for s in SENTENCES)
    assert all(e["response_id"] == response_id for e in events.of("response.output_audio.delta"))
    kinds = events.kinds()
    assert kinds.index("response.created") < kinds.index("response.output_item.added")
    assert kinds.index("response.output_audio.done") < kinds.index("response.done")
    assert done["response"]["output"][0]["content"][0]["transcript"] == transcript
    assert chat.stats.last_body is not None
    assert chat.stats.last_body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat.stats.last_body["messages"][-1] == {"role": "user", "content": "what time is it"}
    assert tts.stats.texts == SENTENCES
    assert tts.stats.last_body is not None and tts.stats.last_body["voice"] == "coral"
    assert len({e["event_id"] for e in events.all}) == len(events.all)


async def test_with_server_vad_the_turn_is_detected_and_answered(client: Client) -> None:
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        created = await events.read(connection, of_type("session.created"))
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        await append(connection, speech_24k())
        done = await events.read(connection, of_type("response.done"))
    started = events.of("input_audio_buffer.speech_started")[0]
    stopped = events.of("input_audio_buffer.speech_stopped")[0]
    committed = events.of("input_audio_buffer.committed")[0]
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert 0 <= started["audio_start_ms"] < stopped["audio_end_ms"]
    heard = events.of("conversation.item.input_audio_transcription.completed")[0]
    assert heard["item_id"] == started["item_id"] and heard["transcript"] == "what time is it"
    assert done["response"]["status"] == "completed"
    assert len(audio_of(events)) > 0


async def test_a_text_item_answered_in_text_only(client: Client, tts: FakeSpeechServer) -> None:
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        await connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "what time is it"}],
            }
        )
        item = await events.read(connection, of_type("conversation.item.created"))
        await connection.response.create(response={"output_modalities": ["text"]})
        done = await events.read(connection, of_type("response.done"))
    assert item["item"]["content"] == [{"type": "input_text", "text": "what time is it"}]
    assert "".join(e["delta"] for e in events.of("response.output_text.delta")) == "".join(REPLY)
    assert events.of("response.output_audio.delta") == []
    assert done["response"]["output_modalities"] == ["text"]
    assert done["response"]["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "It is noon. Anything else?",
    }


async def test_response_cancel_ends_the_response_as_cancelled(
    client: Client, chat: FakeOpenAI
) -> None:
    chat.script.delay = 0.3
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        await connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await connection.response.create()
        created = await events.read(connection, of_type("response.created"))
        await connection.response.cancel()
        done = await events.read(connection, of_type("response.done"))
        # the session goes on: a second cancel has nothing to cancel
        await connection.response.cancel()
        error = await events.read(connection, of_type("error"))
    assert done["response"]["id"] == created["response"]["id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    assert error["error"]["code"] == "response_cancel_not_active"


async def test_bad_events_get_typed_errors_and_the_session_lives(client: Client) -> None:
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        await connection.send({"type": "session.explode", "event_id": "evt_1"})
        unknown = await events.read(connection, of_type("error"))
        await connection.send(
            {"type": "input_audio_buffer.append", "audio": "%%%", "event_id": "evt_2"}
        )
        not_base64 = await events.read(connection, of_type("error"))
        await connection.session.update(
            session={"type": "realtime", "audio": {"input": {"format": {"type": "audio/opus"}}}},
            event_id="evt_3",
        )
        bad_format = await events.read(connection, of_type("error"))
        await connection.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await events.read(connection, of_type("session.updated"))
        await connection.input_audio_buffer.commit(event_id="evt_4")
        empty = await events.read(connection, of_type("error"))
        await connection.response.create(event_id="evt_5")
        nothing = await events.read(connection, of_type("error"))
        await connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await connection.response.create()
        await connection.response.create(event_id="evt_6")
        busy = await events.read(connection, of_type("error"))
        await events.read(connection, of_type("response.done"))
    assert unknown["error"]["type"] == "invalid_request_error"
    assert (unknown["error"]["code"], unknown["error"]["param"]) == ("invalid_value", "type")
    assert unknown["error"]["event_id"] == "evt_1"
    assert (not_base64["error"]["param"], not_base64["error"]["event_id"]) == ("audio", "evt_2")
    assert bad_format["error"]["param"] == "session.audio.input.format"
    assert bad_format["error"]["event_id"] == "evt_3"
    assert (empty["error"]["code"], empty["error"]["event_id"]) == (
        "input_audio_buffer_commit_empty",
        "evt_4",
    )
    assert nothing["error"]["code"] == "nothing_to_answer"
    assert (busy["error"]["code"], busy["error"]["event_id"]) == (
        "conversation_already_has_active_response",
        "evt_6",
    )


async def test_g711_in_and_out(client: Client) -> None:
    events = Events(GA)
    speech_8k = resample(np.frombuffer(user_speech(), dtype="<i2"), 16000, 8000)
    async with sdk(client).realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        await connection.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                    "output": {"format": {"type": "audio/pcma"}},
                },
            }
        )
        updated = await events.read(connection, of_type("session.updated"))
        await append(connection, ulaw_encode(speech_8k), chunk=1600)
        await connection.input_audio_buffer.commit()
        await connection.response.create()
        await events.read(connection, of_type("response.done"))
    assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcma"}
    heard = events.of("conversation.item.input_audio_transcription.completed")[0]
    assert heard["transcript"] == "what time is it"
    alaw = audio_of(events)
    # one A-law byte per sample at 8 kHz: a third of the 24 kHz samples the fake spoke
    spoken_samples = sum(expected_bytes(s, 24000) for s in SENTENCES) // 2
    assert len(alaw) == spoken_samples // 3
    assert np.abs(alaw_decode(alaw).astype(np.int32)).max() > 1000  # the fake's tone, not silence


async def test_the_beta_client_gets_the_beta_events(client: Client) -> None:
    events = Events(BETA)
    # the SDK's beta client always dials wss:// unless it is given the websocket URL
    beta = AsyncOpenAI(
        base_url=str(client.make_url("/v1")),
        websocket_base_url=str(client.make_url("/v1").with_scheme("ws")),
        api_key="sk-anything",
    )
    async with beta.beta.realtime.connect(model="talk") as connection:
        created = await events.read(connection, of_type("session.created"))
        assert created["session"]["input_audio_format"] == "pcm16"
        await connection.session.update(
            session={"turn_detection": None, "input_audio_format": "pcm16"}
        )
        await events.read(connection, of_type("session.updated"))
        await append(connection, speech_24k())
        await connection.input_audio_buffer.commit()
        await connection.response.create()
        done = await events.read(connection, of_type("response.done"))
    assert done["response"]["status"] == "completed"
    transcript = "".join(e["delta"] for e in events.of("response.audio_transcript.delta"))
    assert transcript == "".join(REPLY)
    assert len(audio_of(events, "response.audio.delta")) > 0
    assert events.of("response.output_audio.delta") == []


async def test_an_unknown_model_is_refused_before_the_upgrade(client: Client) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with sdk(client).realtime.connect(model="gpt-realtime"):
            pass
    assert caught.value.response.status_code == 404
    assert b"model_not_found" in caught.value.response.body


async def test_speech_during_a_response_cancels_it_as_turn_detected(
    client: Client, chat: FakeOpenAI
) -> None:
    chat.script.delay = 0.2  # the reply takes ~0.8 s to arrive: the user speaks over it
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        await connection.session.update(session={"type": "realtime", "instructions": "Be slow."})
        await events.read(connection, of_type("session.updated"))
        await append(connection, speech_24k())
        first = await events.read(connection, of_type("response.created"))
        await append(connection, speech_24k())
        interrupted = await events.read(connection, of_type("response.done"))
        second = await events.read(connection, of_type("response.done"))
    assert interrupted["response"]["id"] == first["response"]["id"]
    assert interrupted["response"]["status"] == "cancelled"
    assert interrupted["response"]["status_details"]["reason"] == "turn_detected"
    assert second["response"]["status"] == "completed"
    kinds = events.kinds()
    assert kinds.count("input_audio_buffer.speech_started") == 2
    # the barge-in's speech_started comes before the interrupted response's end
    assert [i for i, k in enumerate(kinds) if k == "input_audio_buffer.speech_started"][1] < (
        events.all.index(interrupted)
    )
    assert chat.stats.last_body is not None
    assert chat.stats.last_body["messages"][0] == {"role": "system", "content": "Be slow."}


async def test_an_audio_item_is_heard_like_a_commit(client: Client) -> None:
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        audio = base64.b64encode(speech_24k()).decode()
        await connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": audio}],
            }
        )
        await connection.response.create()
        done = await events.read(connection, of_type("response.done"))
    item = events.of("conversation.item.created")[0]["item"]
    assert item["content"] == [{"type": "input_audio", "transcript": None}]
    heard = events.of("conversation.item.input_audio_transcription.completed")[0]
    assert (heard["item_id"], heard["transcript"]) == (item["id"], "what time is it")
    assert done["response"]["status"] == "completed"
    # with server VAD on, the item's audio is not heard by the VAD as well
    assert events.of("input_audio_buffer.speech_started") == []


async def test_a_committed_segment_nobody_hears_fails_its_item_only(
    client: Client, stt: FakeStt
) -> None:
    stt.script.fault = "http_500"
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        await connection.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await append(connection, speech_24k())
        await connection.input_audio_buffer.commit()
        failed = await events.read(
            connection, of_type("conversation.item.input_audio_transcription.failed")
        )
        # the session lives: a typed turn is answered
        stt.script.fault = "none"
        await connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await connection.response.create()
        done = await events.read(connection, of_type("response.done"))
    assert failed["item_id"] == events.of("input_audio_buffer.committed")[0]["item_id"]
    assert failed["error"]["code"] == "transcription_failed"
    assert done["response"]["status"] == "completed"


async def test_with_server_vad_a_failing_listen_stage_ends_the_session(
    client: Client, stt: FakeStt
) -> None:
    stt.script.fault = "http_500"
    events = Events(GA)
    async with sdk(client).realtime.connect(model="talk") as connection:
        await events.read(connection, of_type("session.created"))
        await append(connection, speech_24k())
        error = await events.read(connection, of_type("error"))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv_bytes(), 5)
    assert error["error"]["type"] == "server_error"
    assert error["error"]["code"] == "conversation_failed"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def test_with_client_keys_the_session_needs_one_and_its_routers(
    sluice: MakeClient, stt: FakeStt, chat: FakeOpenAI, tts: FakeSpeechServer
) -> None:
    config = agent_config(
        [stt_model("stt", stt.url)], [chat_model("chat", chat.url)], [tts_model("tts", tts.url)]
    )
    keys = [
        {"id": "good", "hash": hash_key("sk-sluice-good")},
        {"id": "limited", "hash": hash_key("sk-sluice-limited"), "routers": ["other"]},
    ]
    client = await sluice(
        config.model_copy(update={"auth": AuthConfig.model_validate({"keys": keys})})
    )
    base = str(client.make_url("/v1"))
    statuses = []
    for key in ("sk-wrong", "sk-sluice-limited"):
        with pytest.raises(InvalidStatus) as caught:
            async with AsyncOpenAI(base_url=base, api_key=key).realtime.connect(model="talk"):
                pass
        statuses.append(caught.value.response.status_code)
    assert statuses == [401, 403]
    events = Events(GA)
    good = AsyncOpenAI(base_url=base, api_key="sk-sluice-good")
    async with good.realtime.connect(model="talk") as connection:
        created = await events.read(connection, of_type("session.created"))
    assert created["session"]["model"] == "talk"
