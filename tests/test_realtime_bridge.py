"""realtime/bridge.py alone: client events in, conversation inputs and server events out,
conversation events in, server events out (no socket, no pipeline)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np

from operators.vad import SpeechEnded, SpeechStarted
from pipelines.chat_router import ModelInfo
from pipelines.conversation_types import (
    ClearAudio,
    CommitAudio,
    Configure,
    ConversationInput,
    CreateResponse,
    Notice,
    ReplyAudio,
    ReplyAudioDropped,
    ReplyStarted,
    ReplyText,
    ReplyToolCalls,
    ToolResult,
    TurnEnded,
    UserAudio,
    UserText,
)
from pipelines.listen_router import SegmentTranscript
from pipelines.speech_in import Transcribed
from providers.types import ToolCall
from realtime.bridge import Bridge
from realtime.client_events import (
    AudioAppend,
    AudioClear,
    AudioCommit,
    ItemCreate,
    ResponseCreate,
    SessionUpdate,
)
from realtime.ids import Ids
from realtime.server_events import ServerEvents
from realtime.session import SessionSettings, TurnDetection

MODEL = ModelInfo("stt", "openai", "whisper")


class Harness:
    def __init__(self, vad: bool) -> None:
        self.sent: list[ConversationInput] = []
        self.events: list[dict[str, Any]] = []
        self.deferred: list[Callable[[], None]] = []
        ids = Ids()
        settings = SessionSettings("sess", "talk", turn_detection=TurnDetection() if vad else None)
        self.bridge = Bridge(
            settings,
            ServerEvents("ga", ids),
            ids,
            self.sent.append,
            self.events.append,
            48000,
            self.deferred.append,
        )

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.events]

    def run_deferred(self) -> None:
        while self.deferred:
            self.deferred.pop(0)()


def pcm_24k(ms: int) -> str:
    samples = np.full(24 * ms, 500, dtype="<i2")
    return base64.b64encode(samples.tobytes()).decode()


def final(segment_id: int, text: str) -> Transcribed:
    return Transcribed(segment_id, SegmentTranscript(segment_id, text, True, 0, 800, MODEL))


def test_without_vad_audio_waits_for_the_commit_and_a_create_for_the_transcript() -> None:
    h = Harness(vad=False)
    h.bridge.on_client_event(AudioAppend(None, pcm_24k(500)))
    assert h.sent == []  # buffered here, not sent
    h.bridge.on_client_event(AudioCommit("e1"))
    assert [type(i) for i in h.sent] == [UserAudio, CommitAudio]
    audio = h.sent[0]
    assert isinstance(audio, UserAudio) and len(audio.pcm) == 16000  # 500 ms at 16 kHz
    assert h.kinds() == ["input_audio_buffer.committed", "conversation.item.created"]
    item_id = h.events[0]["item_id"]
    h.bridge.on_client_event(ResponseCreate("e2", None, None))
    assert len(h.sent) == 2  # held until the committed audio is heard
    h.bridge.on_event(final(0, "what time is it"))
    assert h.events[-1]["type"] == "conversation.item.input_audio_transcription.completed"
    assert h.events[-1]["item_id"] == item_id
    assert len(h.sent) == 2  # released on the next loop turn, not inside the event
    h.run_deferred()
    assert h.sent[-1] == CreateResponse(None)


def test_a_buffer_over_its_limit_is_refused_and_kept() -> None:
    h = Harness(vad=False)
    h.bridge.on_client_event(AudioAppend(None, pcm_24k(1200)))  # 38400 of 48000 bytes
    h.bridge.on_client_event(AudioAppend("e9", pcm_24k(500)))
    assert h.events[-1]["error"]["code"] == "input_audio_buffer_full"
    assert h.events[-1]["error"]["event_id"] == "e9"
    h.bridge.on_client_event(AudioClear(None))
    assert isinstance(h.sent[-1], ClearAudio) and h.kinds()[-1] == "input_audio_buffer.cleared"
    h.bridge.on_client_event(AudioCommit("e3"))
    assert h.events[-1]["error"]["code"] == "input_audio_buffer_commit_empty"


def test_turning_vad_on_hands_the_buffer_to_it() -> None:
    h = Harness(vad=False)
    h.bridge.on_client_event(AudioAppend(None, pcm_24k(200)))
    h.bridge.on_client_event(
        SessionUpdate(None, {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
    )
    assert h.sent[0] == Configure(turn_detection=True)
    assert isinstance(h.sent[1], UserAudio) and len(h.sent[1].pcm) > 0
    h.bridge.on_client_event(AudioAppend(None, pcm_24k(100)))
    assert isinstance(h.sent[-1], UserAudio)  # straight to the VAD now
    assert h.kinds() == ["session.updated"]


def test_vad_boundaries_make_one_user_item() -> None:
    h = Harness(vad=True)
    h.bridge.on_event(SpeechStarted(0, 300, 100))
    h.bridge.on_event(SpeechEnded(0, 900, 1200))
    h.bridge.on_event(final(0, " hello "))
    assert h.kinds() == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert len({e.get("item_id") or e["item"]["id"] for e in h.events}) == 1
    assert h.events[0]["audio_start_ms"] == 100 and h.events[1]["audio_end_ms"] == 1200
    assert h.events[-1]["transcript"] == "hello"


def test_a_user_text_item_is_a_turn_without_a_reply() -> None:
    h = Harness(vad=True)
    content = [{"type": "input_text", "text": "hi"}]
    h.bridge.on_client_event(
        ItemCreate(None, {"type": "message", "role": "user", "content": content}, None)
    )
    assert h.sent == [UserText("hi", respond=False)]
    assert h.events[-1]["item"]["content"] == content
    h.bridge.on_client_event(
        ItemCreate("e5", {"type": "message", "role": "assistant", "content": content}, None)
    )
    assert (h.events[-1]["error"]["code"], h.events[-1]["error"]["param"]) == (
        "unsupported",
        "item.role",
    )


def test_a_reply_after_a_failover_inside_a_sentence_does_not_repeat_its_start() -> None:
    h = Harness(vad=True)
    h.bridge.on_event(ReplyStarted(1))
    h.bridge.on_event(ReplyText(1, "Hi.", MODEL))
    h.bridge.on_event(ReplyAudio(1, np.ones(2400, dtype=np.int16), "a"))
    h.bridge.on_event(ReplyAudioDropped(1, "a", 2400, RuntimeError("boom")))
    h.bridge.on_event(ReplyAudio(1, np.full(4800, 2, dtype=np.int16), "b"))
    h.bridge.on_event(TurnEnded(1, "complete", "hey", "Hi."))
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in h.events if e["type"] == "response.output_audio.delta"
    )
    samples = np.frombuffer(audio, dtype="<i2")
    # 2400 samples of model a, then model b's audio from its 2400th sample on
    assert samples.size == 4800
    assert (samples[:2400] == 1).all() and (samples[2400:] == 2).all()
    done = h.events[-1]
    assert done["type"] == "response.done" and done["response"]["status"] == "completed"


def test_a_failed_reply_is_a_failed_response_and_notices_are_errors() -> None:
    h = Harness(vad=True)
    h.bridge.on_event(ReplyStarted(1))
    h.bridge.on_event(TurnEnded(1, "error", "hey", "", RuntimeError("all models down")))
    done = h.events[-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"]["error"] == {
        "type": "server_error",
        "code": "all_models_unavailable",
    }
    h.bridge.on_event(Notice("reply_in_progress", "busy"))
    assert h.events[-1]["error"]["code"] == "conversation_already_has_active_response"


def test_tools_reach_the_conversation_and_calls_become_function_call_items() -> None:
    h = Harness(vad=False)
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    h.bridge.on_client_event(
        SessionUpdate(None, {"tools": [tool], "tool_choice": {"type": "function", "name": "f"}})
    )
    assert h.sent[-1] == Configure(
        tools=({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},),
        tool_choice={"type": "function", "function": {"name": "f"}},
    )
    h.bridge.on_client_event(ResponseCreate(None, None, None))
    h.bridge.on_event(ReplyStarted(1))
    chat = ModelInfo("lm", "openai", "gpt")
    h.bridge.on_event(ReplyToolCalls(1, (ToolCall("c1", "f", '{"a": 1}'),), chat))
    assert "response.function_call_arguments.done" not in h.kinds()  # after the message item
    h.bridge.on_event(TurnEnded(1, "complete", "hi", ""))
    kinds = h.kinds()
    at = kinds.index("response.output_item.done")
    assert kinds[at + 1 :] == [
        "response.output_item.added",
        "conversation.item.created",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
    ]
    output = h.events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "function_call"]
    assert output[1]["call_id"] == "c1" and output[1]["arguments"] == '{"a": 1}'
    # an output for that call goes to the conversation without a reply; a second is refused
    item = {"type": "function_call_output", "call_id": "c1", "output": "ok"}
    h.bridge.on_client_event(ItemCreate("e1", item, None))
    assert h.sent[-1] == ToolResult("c1", "ok", respond=False)
    assert h.events[-1]["item"]["type"] == "function_call_output"
    h.bridge.on_client_event(ItemCreate("e2", item, None))
    assert h.events[-1]["type"] == "error"
    assert (h.events[-1]["error"]["param"], h.events[-1]["error"]["event_id"]) == (
        "item.call_id",
        "e2",
    )
