"""The Realtime layer's pieces: every server event against the `openai` package's own
types (GA and beta), session.update in both shapes, client event parsing, audio formats."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from audio.g711 import ulaw_encode
from realtime.client_events import (
    AudioAppend,
    ItemCreate,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    parse_client_event,
)
from realtime.formats import (
    PCM,
    AudioFormat,
    FormatError,
    InputDecoder,
    OutputEncoder,
    decode_base64,
    parse_format,
)
from realtime.ids import Ids
from realtime.problems import Problem
from realtime.server_events import ServerEvents
from realtime.session import SessionSettings, TurnDetection, apply_update
from realtime.voices import speak_voice
from tests.realtime_helpers import BETA, GA


def every_event(events: ServerEvents) -> list[dict[str, Any]]:
    settings = SessionSettings("sess_1", "agent", "Be brief.", "alloy")
    response = events.response(
        "resp_1", "in_progress", [], text_only=False, voice="alloy", output_format=PCM
    )
    item = events.assistant_item("item_2", "completed", "Hi.", text_only=False)
    done = events.response(
        "resp_1",
        "cancelled",
        [item],
        text_only=False,
        voice=None,
        output_format=AudioFormat("pcmu"),
        reason="turn_detected",
    )
    failed = events.response(
        "resp_2",
        "failed",
        [],
        text_only=True,
        voice=None,
        output_format=PCM,
        error=Problem("all_models_unavailable", "x", type="server_error"),
    )
    return [
        events.session_created(settings),
        events.session_updated(settings),
        events.error(Problem("invalid_value", "bad", "type", "evt_1")),
        events.speech_started(120, "item_1"),
        events.speech_stopped(900, "item_1"),
        events.committed("item_1", None),
        events.cleared(),
        events.item_created(events.user_item("item_1"), None),
        events.item_created(events.user_item("item_3", text="Hello"), "item_2"),
        events.item_created(events.assistant_item("item_2", "in_progress", None, False), "x"),
        events.item_created(events.assistant_item("item_4", "completed", "Yo", True), "x"),
        events.transcription_completed("item_1", "hello there", 0.78),
        events.transcription_failed("item_1", Problem("x", "y", type="server_error")),
        events.response_created(response),
        events.output_item_added(
            "resp_1", events.assistant_item("item_2", "in_progress", None, False)
        ),
        events.content_part_added("resp_1", "item_2", False),
        events.content_part_added("resp_1", "item_2", True),
        events.audio_delta("resp_1", "item_2", "AAAA"),
        events.transcript_delta("resp_1", "item_2", "Hi"),
        events.text_delta("resp_1", "item_2", "Hi"),
        events.audio_done("resp_1", "item_2"),
        events.transcript_done("resp_1", "item_2", "Hi."),
        events.text_done("resp_1", "item_2", "Hi."),
        events.content_part_done("resp_1", "item_2", False, "Hi."),
        events.output_item_done("resp_1", item),
        events.response_done(done),
        events.response_done(failed),
    ]


def declared_fields(model: BaseModel) -> set[str]:
    return set(type(model).model_fields)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_every_server_event_is_what_the_sdk_declares(dialect: str) -> None:
    models = GA if dialect == "ga" else BETA
    events = ServerEvents("ga" if dialect == "ga" else "beta", Ids())
    seen_ids = set()
    for event in every_event(events):
        parsed = models[event["type"]].model_validate(event)
        # the SDK's models accept unknown keys: check that no key is one it does not know
        assert set(event) <= declared_fields(parsed), event["type"]
        seen_ids.add(event["event_id"])
    assert len(seen_ids) == len(every_event(ServerEvents("ga", Ids())))


def test_dialects_name_the_audio_events_differently() -> None:
    ga, beta = ServerEvents("ga", Ids()), ServerEvents("beta", Ids())
    assert ga.audio_delta("r", "i", "")["type"] == "response.output_audio.delta"
    assert beta.audio_delta("r", "i", "")["type"] == "response.audio.delta"
    assert ga.transcript_delta("r", "i", "")["type"] == "response.output_audio_transcript.delta"
    assert beta.transcript_delta("r", "i", "")["type"] == "response.audio_transcript.delta"
    assert ga.text_delta("r", "i", "")["type"] == "response.output_text.delta"
    assert beta.text_delta("r", "i", "")["type"] == "response.text.delta"
    assert ga.assistant_item("i", "completed", "a", False)["content"][0]["type"] == "output_audio"
    assert beta.assistant_item("i", "completed", "a", False)["content"][0]["type"] == "audio"


BASE = SessionSettings("sess_1", "agent")


def test_a_ga_session_update_sets_formats_voice_and_turn_detection() -> None:
    settings = apply_update(
        BASE,
        {
            "type": "realtime",
            "instructions": "Answer in one sentence.",
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcma"}, "voice": "marin"},
            },
        },
    )
    assert settings.instructions == "Answer in one sentence."
    assert settings.input_format == AudioFormat("pcmu")
    assert settings.output_format == AudioFormat("pcma")
    assert settings.voice == "marin"
    assert settings.turn_detection is None
    again = apply_update(
        settings,
        {
            "audio": {
                "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 700}}
            }
        },
    )
    assert again.turn_detection == TurnDetection(silence_duration_ms=700)
    assert again.input_format == AudioFormat("pcmu")  # untouched


def test_a_beta_session_update_sets_the_same() -> None:
    settings = apply_update(
        BASE,
        {
            "modalities": ["text"],
            "voice": "echo",
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_alaw",
            "turn_detection": {"type": "server_vad", "create_response": False},
        },
    )
    assert settings.text_only
    assert (settings.input_format, settings.output_format) == (
        AudioFormat("pcmu"),
        AudioFormat("pcma"),
    )
    assert settings.voice == "echo"
    assert settings.turn_detection is not None and not settings.turn_detection.create_response


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"audio": {"input": {"format": {"type": "audio/opus"}}}}, "session.audio.input.format"),
        ({"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}, None),
        ({"input_audio_format": "mp3"}, "session.input_audio_format"),
        ({"turn_detection": {"type": "push_to_talk"}}, "session.turn_detection.type"),
        ({"turn_detection": {"silence_duration_ms": "long"}}, None),
        ({"type": "transcription"}, "session.type"),
        ({"tools": [{"type": "function"}]}, "session.tools[0].name"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "session.tools[0].type"),
        ({"tools": [{"name": "f", "parameters": "{}"}]}, "session.tools[0].parameters"),
        ({"tool_choice": {"type": "function", "name": "f"}}, "session.tool_choice.name"),
        ({"tool_choice": "sometimes"}, "session.tool_choice"),
        ({"instructions": 3}, "session.instructions"),
        ("not an object", "session"),
    ],
)
def test_a_bad_session_update_names_the_field_and_changes_nothing(
    body: object, param: str | None
) -> None:
    with pytest.raises(Problem) as caught:
        apply_update(BASE, body)
    if param is not None:
        assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"


def test_client_events_parse_into_their_types() -> None:
    update = parse_client_event(b'{"type": "session.update", "event_id": "e1", "session": {}}')
    assert update == SessionUpdate("e1", {})
    append = parse_client_event('{"type": "input_audio_buffer.append", "audio": "AAAA"}')
    assert append == AudioAppend(None, "AAAA")
    create = parse_client_event(
        '{"type": "response.create", "response": {"instructions": "Shout.", '
        '"output_modalities": ["text"]}}'
    )
    assert create == ResponseCreate(None, "Shout.", True)
    assert parse_client_event('{"type": "response.cancel"}') == ResponseCancel(None, None)
    item = parse_client_event(
        '{"type": "conversation.item.create", "item": {"type": "message", "role": "user", '
        '"content": [{"type": "input_text", "text": "Hi"}]}}'
    )
    assert isinstance(item, ItemCreate) and item.item["role"] == "user"


@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        ('{"type": "session.explode", "event_id": "e9"}', "invalid_value", "type"),
        ('{"event_id": "e9"}', "invalid_value", "type"),
        ('{"type": "conversation.item.truncate", "event_id": "e9"}', "unsupported_event", "type"),
        (
            '{"type": "conversation.item.create", "event_id": "e9", "item": 3}',
            "invalid_value",
            "item",
        ),
        (
            '{"type": "response.create", "event_id": "e9", "response": {"conversation": "none"}}',
            "unsupported",
            "response.conversation",
        ),
    ],
)
def test_bad_client_events_are_typed_problems(text: str, code: str, param: str | None) -> None:
    with pytest.raises(Problem) as caught:
        parse_client_event(text)
    assert (caught.value.code, caught.value.param) == (code, param)
    if '"event_id": "e9"' in text:
        assert caught.value.event_id == "e9"


def test_formats_in_both_shapes() -> None:
    assert parse_format({"type": "audio/pcm", "rate": 24000}) == PCM
    assert parse_format({"type": "audio/pcmu"}).beta() == "g711_ulaw"
    assert parse_format("g711_alaw").ga() == {"type": "audio/pcma"}
    assert parse_format("pcm16").rate == 24000 and parse_format("g711_ulaw").rate == 8000
    with pytest.raises(FormatError):
        parse_format({"type": "audio/pcm", "rate": 44100})
    with pytest.raises(FormatError):
        decode_base64("not base64!")


def test_input_audio_is_decoded_to_16_khz_whatever_its_format() -> None:
    tone = (np.sin(np.arange(2400) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    ulaw = InputDecoder(AudioFormat("pcmu"))
    out = ulaw.decode(decode_base64(base64.b64encode(ulaw_encode(tone)).decode()))
    assert ulaw.ms() == 300
    out += ulaw.flush()
    assert len(out) // 2 == 4800  # 300 ms at 16 kHz
    pcm = InputDecoder(PCM)
    # a chunk may end in the middle of a sample
    first = pcm.decode(b"\x01\x00" * 1200 + b"\x02")
    second = pcm.decode(b"\x00" + b"\x01\x00" * 1199)
    assert pcm.ms() == 100
    assert (len(first) + len(second) + len(pcm.flush())) // 2 == 1600


def test_reply_audio_is_encoded_in_the_output_format() -> None:
    samples = np.full(2400, 1000, dtype=np.int16)  # 100 ms at 24 kHz
    pcm = OutputEncoder(PCM)
    assert len(base64.b64decode(pcm.encode(samples))) == 4800
    ulaw = OutputEncoder(AudioFormat("pcmu"))
    encoded = base64.b64decode(ulaw.encode(samples)) + base64.b64decode(ulaw.flush())
    assert len(encoded) == 800  # one byte per sample at 8 kHz


def test_openai_voice_names_go_to_openai_speak_models_only() -> None:
    assert speak_voice("alloy") == {"openai": "alloy"}
    assert speak_voice("en-us") == "en-us"
    assert speak_voice(None) is None
