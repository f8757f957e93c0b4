"""The conversation's parts on their own: the history (messages, waiting tool calls,
the chat request) and the user's side of the turn. The whole conversation is tested
in virtual time in test_conversation_virtual.py; these pin each part's rules."""

from __future__ import annotations

import pytest

from operators.vad import SpeechEnded, SpeechStarted
from pipelines.conversation_history import History
from pipelines.conversation_types import ConversationSettings
from pipelines.listen_router import ModelInfo, SegmentTranscript
from pipelines.speech_in import Transcribed
from pipelines.user_turn import UserTurnState
from providers.types import ToolCall

MODEL = ModelInfo("stt", "fake", "whisper-1")
WEATHER = ToolCall("call_w", "get_weather", '{"city": "Oslo"}')
TIME = ToolCall("call_t", "get_time", "{}")


def _final(segment_id: int, text: str) -> Transcribed:
    return Transcribed(segment_id, SegmentTranscript(segment_id, text, True, 0, 100, MODEL))


def test_history_joins_same_role_messages_and_keeps_the_newest() -> None:
    history = History()
    history.remember("user", "hello", limit=3)
    history.remember("user", "there", limit=3)
    history.remember("assistant", "hi", limit=3)
    history.remember("user", "weather?", limit=3)
    history.remember("assistant", "sunny", limit=3)
    assert history.messages == [
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "sunny"},
    ]


def test_history_never_starts_with_a_tool_result() -> None:
    history = History()
    history.remember("assistant", "", limit=3, calls=(WEATHER,))
    history.await_calls((WEATHER,), "weather?")
    assert history.tool_result("call_w", '{"sky": "clear"}')
    history.remember("assistant", "It is clear.", limit=2)
    assert [m["role"] for m in history.messages] == ["assistant"]


def test_only_the_last_replys_calls_take_results_and_unanswered_ones_leave() -> None:
    history = History()
    history.remember("user", "weather and time?", limit=20)
    history.remember("assistant", "Checking.", limit=20, calls=(WEATHER, TIME))
    history.await_calls((WEATHER, TIME), "weather and time?")
    assert not history.tool_result("call_x", "{}")
    assert history.tool_result("call_w", "{}")
    assert not history.tool_result("call_w", "{}")  # answered once only
    history.close_calls()
    assistant = history.messages[1]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_w"]
    assert history.open_calls == {}
    assert history.last_role() == "tool"


def test_an_assistant_message_of_only_unanswered_calls_leaves_whole() -> None:
    history = History()
    history.remember("user", "time?", limit=20)
    history.remember("assistant", "", limit=20, calls=(TIME,))
    history.await_calls((TIME,), "time?")
    history.close_calls()
    assert history.messages == [{"role": "user", "content": "time?"}]


def test_a_reply_heard_in_part_is_cut_in_the_history() -> None:
    history = History()
    history.remember("user", "tell me", limit=20)
    history.remember("assistant", "One. Two. Three.", limit=20)
    history.cut_last_reply("One.")
    assert history.messages[-1] == {"role": "assistant", "content": "One."}
    history.cut_last_reply("")
    assert history.last_role() == "user"


def test_the_chat_request_has_the_instructions_first_and_the_tools() -> None:
    history = History()
    history.remember("user", "hi", limit=20)
    tools = ({"type": "function", "function": {"name": "get_time", "parameters": {}}},)
    request = history.request("Be brief.", ConversationSettings(tools=tools))
    body = request.model_dump(exclude_none=True)
    assert body["message"]["content"] == "hi"
    assert [m["role"] for m in body["message_history"]] == ["system"]
    assert body["tools"][0]["function"]["name"] == "get_time"
    with pytest.raises(IndexError):
        History().request(None, ConversationSettings())


def test_a_turn_is_ready_when_the_user_is_quiet_and_every_final_is_in() -> None:
    user = UserTurnState()
    assert not user.heard(SpeechStarted(0, 0, 0))
    assert not user.heard(SpeechEnded(0, 900, 1200))
    assert not user.ready()  # segment 0 has no final yet
    assert user.heard(_final(0, " what time is it "))
    assert user.ready()
    user.heard(SpeechStarted(1, 1500, 1200))
    assert not user.ready()  # speaking again: the turn waits
    user.heard(SpeechEnded(1, 1800, 2100))
    user.heard(_final(1, "  "))  # an empty final adds nothing
    assert user.take() == "what time is it"
    assert user.turns == 1
    assert user.take() is None


def test_committed_audio_becomes_numbered_finished_segments() -> None:
    user = UserTurnState()
    assert user.commit() is None
    user.buffer.extend(b"\x01\x00" * 1600)  # 100 ms at 16 kHz
    committed = user.commit()
    assert committed is not None
    segment_id, audio = committed
    assert (segment_id, audio.finished, audio.size) == (0, True, 3200)
    assert user.buffer == bytearray()
    user.buffer.extend(b"\x00\x00" * 160)
    second = user.commit()
    assert second is not None and second[0] == 1
