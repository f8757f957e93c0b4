"""Virtual-time tests of tool calls in a conversation (`pipelines.conversation`): a
reply that calls tools, the client's results, and the reply made from them.

The rig is `tests/test_conversation_virtual.Rig` with a chat source that plays one
scripted answer per request: one chunk per tick.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reactivex import Observable
from reactivex.testing import ReactiveTest

from pipelines.chat_router import ChatChunk, ChatEvent
from pipelines.conversation_types import (
    Configure,
    CreateResponse,
    Notice,
    ReplyAudio,
    ReplySegment,
    ReplyStarted,
    ReplyToolCalls,
    ToolResult,
    TurnEnded,
    UserText,
)
from protocol.chat import ChatRequest
from providers.types import ChatDelta, ToolCall, ToolCallDelta
from tests.test_conversation_virtual import CHAT, T0, Rig

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = ToolCallDelta(0, "call_1", "get_weather", '{"city": "Paris"}')
CALLING = [ChatDelta("Let me check. "), ChatDelta("", "tool_calls", tool_calls=(CALL,))]
ANSWER = [ChatDelta("It is sunny. "), ChatDelta("", "complete")]


def scripted(rig: Rig, answers: list[list[ChatDelta]]) -> None:
    """The rig's chat plays `answers` in order, one per request."""
    queue = iter(answers)

    def chat(request: ChatRequest) -> Observable[ChatEvent]:
        rig.requests.append(request)
        deltas = next(queue)
        source = rig.scheduler.create_cold_observable(
            *[on_next(i + 1, ChatChunk(CHAT, d)) for i, d in enumerate(deltas)],
            on_completed(len(deltas)),
        )
        rig.chats.append(source)
        return source

    rig.parts = replace(rig.parts, chat=chat)


def roles(request: ChatRequest) -> list[tuple[str, str, tuple[ToolCall, ...], str | None]]:
    """The request's whole conversation (history and message) in brief."""
    messages = [*request.message_history, request.message]
    out = [m.to_message() for m in messages]
    return [(m.role, m.content, m.tool_calls, m.tool_call_id) for m in out]


def test_a_reply_that_calls_a_tool_speaks_its_text_and_answers_from_the_result() -> None:
    rig = Rig([], [])
    scripted(rig, [CALLING, ANSWER])
    inputs: list[tuple[float, Any]] = [
        (T0 + 1, UserText("What is the weather in Paris?")),
        (T0 + 20, ToolResult("call_1", '{"sky": "sunny"}')),
    ]
    events = rig.run(inputs, tools=(WEATHER,), tool_choice="auto")
    # the first answer: text at 202, the call with the finish at 203
    calls = [(t, e) for t, e in events if isinstance(e, ReplyToolCalls)]
    assert calls == [
        (T0 + 3, ReplyToolCalls(1, (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),), CHAT))
    ]
    request = rig.requests[0]
    assert [t.function.name for t in request.tools or []] == ["get_weather"]
    # the text before the call is spoken as usual; the call has no audio
    spoken = [e.sentence.text for _, e in events if isinstance(e, ReplySegment)]
    assert spoken == ["Let me check.", "It is sunny."]
    assert rig.sentences == ["Let me check.", "It is sunny."]
    ended = [(t, e.turn_id, e.reason, e.reply_text) for t, e in events if isinstance(e, TurnEnded)]
    assert ended[0][1:] == (1, "complete", "Let me check.")
    # the result at 220 starts the reply of the same turn at once
    started = [(t, e.turn_id) for t, e in events if isinstance(e, ReplyStarted)]
    assert started == [(T0 + 1, 1), (T0 + 20, 1)]
    assert ended[1][1:] == (1, "complete", "It is sunny.")
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    assert roles(rig.requests[1]) == [
        ("user", "What is the weather in Paris?", (), None),
        ("assistant", "Let me check.", (call,), None),
        ("tool", '{"sky": "sunny"}', (), "call_1"),
    ]
    assert not [e for _, e in events if isinstance(e, Notice)]


def test_results_without_respond_wait_for_the_clients_respond() -> None:
    rig = Rig([], [])
    two = (CALL, ToolCallDelta(1, "call_2", "get_weather", '{"city": "Rome"}'))
    scripted(rig, [[ChatDelta("", "tool_calls", tool_calls=two)], ANSWER])
    inputs: list[tuple[float, Any]] = [
        (T0 + 1, UserText("Paris or Rome?")),
        (T0 + 10, ToolResult("call_2", "rain", respond=False)),
        (T0 + 11, ToolResult("call_1", "sun", respond=False)),
        (T0 + 12, ToolResult("call_1", "again")),
        (T0 + 15, CreateResponse()),
    ]
    events = rig.run(inputs, tools=(WEATHER,))
    (at, calls), *_ = [(t, e) for t, e in events if isinstance(e, ReplyToolCalls)]
    assert at == T0 + 2 and [c.id for c in calls.calls] == ["call_1", "call_2"]
    # a reply with only calls sends no audio
    first_turn = [e for t, e in events if isinstance(e, ReplyAudio) and t < T0 + 15]
    assert first_turn == []
    notices = [(t, e.name) for t, e in events if isinstance(e, Notice)]
    assert notices == [(T0 + 12, "unknown_tool_call")]  # call_1 already has its result
    started = [t for t, e in events if isinstance(e, ReplyStarted)]
    assert started == [T0 + 1, T0 + 15]
    assert [(r, c, i) for r, c, _, i in roles(rig.requests[1])] == [
        ("user", "Paris or Rome?", None),
        ("assistant", "", None),
        ("tool", "rain", "call_2"),
        ("tool", "sun", "call_1"),
    ]


def test_the_users_next_turn_drops_calls_still_without_a_result() -> None:
    rig = Rig([], [])
    scripted(rig, [CALLING, ANSWER])
    inputs: list[tuple[float, Any]] = [
        (T0 + 1, UserText("Weather?")),
        (T0 + 20, UserText("Never mind, tell me a joke.")),
        (T0 + 40, ToolResult("call_1", "sun")),
    ]
    events = rig.run(inputs, tools=(WEATHER,))
    assert roles(rig.requests[1]) == [
        ("user", "Weather?", (), None),
        ("assistant", "Let me check.", (), None),
        ("user", "Never mind, tell me a joke.", (), None),
    ]
    notices = [(t, e.name) for t, e in events if isinstance(e, Notice)]
    assert notices == [(T0 + 40, "unknown_tool_call")]


def test_update_changes_the_tools_of_later_replies() -> None:
    rig = Rig([], [])
    scripted(rig, [ANSWER, ANSWER])
    inputs: list[tuple[float, Any]] = [
        (T0 + 1, UserText("one")),
        (T0 + 10, Configure(tools=(), tool_choice="none")),
        (T0 + 20, UserText("two")),
    ]
    rig.run(
        inputs,
        tools=(WEATHER,),
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert rig.requests[0].tools is not None and rig.requests[0].tool_choice is not None
    assert rig.requests[1].tools is None
