"""Virtual-time tests of tool-call assembly (`operators.tool_calls`): text streams at
once, each call is held until whole and then sent at once, parallel calls keep
their indexes, a call that does not parse fails the attempt, and the same rule
fused into the attempt guard keeps the idle deadline fed while a call is held."""

from __future__ import annotations

from typing import Any

import pytest
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

from operators.attempt import Deadlines, guard_attempt
from operators.tool_calls import ToolCallHold, hold_tool_calls
from providers.types import ChatDelta, ErrorCategory, ProviderError, ToolCallDelta

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
subscribe = ReactiveTest.subscribe
T0 = ReactiveTest.subscribed


def text(content: str) -> ChatDelta:
    return ChatDelta(content)


def frag(
    index: int, arguments: str, call_id: str | None = None, name: str | None = None
) -> ChatDelta:
    return ChatDelta("", tool_calls=(ToolCallDelta(index, call_id, name, arguments),))


FINAL = ChatDelta("", finish_reason="complete")


def _values(messages: list[Recorded[Any]]) -> list[tuple[float, Any]]:
    notes: list[tuple[float, Any]] = [(m.time, m.value) for m in messages]
    return [(time, note.value) for time, note in notes if note.kind == "N"]


def _error(messages: list[Recorded[Any]]) -> Any:
    note: Any = messages[-1].value
    assert note.kind == "E"
    return note.exception


def test_text_passes_and_each_call_leaves_whole_when_the_next_starts() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, text("Let me look")),
        on_next(2, frag(0, '{"ci', "c0", "weather")),
        on_next(3, frag(0, 'ty": "Oslo"}')),
        on_next(5, frag(1, "{", "c1", "time")),
        on_next(6, frag(1, "}")),
        on_next(8, FINAL),
        on_completed(9),
    )
    results = scheduler.start(lambda: source.pipe(hold_tool_calls()))
    values = _values(results.messages)
    assert [t for t, _ in values] == [T0 + 1, T0 + 5, T0 + 8]
    assert values[0][1] == text("Let me look")
    assert values[1][1].tool_calls == (ToolCallDelta(0, "c0", "weather", '{"city": "Oslo"}'),)
    last = values[2][1]
    assert last.tool_calls == (ToolCallDelta(1, "c1", "time", "{}"),)
    assert last.finish_reason == "tool_calls"  # the vendor said `complete`
    assert results.messages[-1] == on_completed(T0 + 9)


def test_a_whole_call_in_one_fragment_waits_only_for_the_finish() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, frag(0, '{"a": 1}', "x", "f")),
        on_next(4, ChatDelta("", finish_reason="tool_calls")),
        on_completed(4),
    )
    results = scheduler.start(lambda: source.pipe(hold_tool_calls()))
    [(time, delta)] = _values(results.messages)
    assert time == T0 + 4
    assert delta.tool_calls == (ToolCallDelta(0, "x", "f", '{"a": 1}'),)


def test_arguments_that_do_not_parse_fail_the_attempt_and_nothing_of_the_call_leaks() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, text("ok")),
        on_next(2, frag(0, '{"a": ', "x", "f")),
        on_next(3, FINAL),
        on_next(4, text("never")),
        on_completed(5),
    )
    results = scheduler.start(lambda: source.pipe(hold_tool_calls("r/m")))
    assert _values(results.messages) == [(T0 + 1, text("ok"))]
    error = _error(results.messages)
    assert isinstance(error, ProviderError) and error.category is ErrorCategory.PROTOCOL
    assert "r/m: tool call 0 (f)" in str(error)
    assert source.subscriptions == [subscribe(T0, T0 + 3)]


def test_a_call_without_a_name_fails_and_a_missing_id_is_made_up() -> None:
    hold = ToolCallHold()
    hold(frag(0, "{}"))
    with pytest.raises(ProviderError, match="no function name"):
        hold(FINAL)
    out = ToolCallHold()(ChatDelta("", "complete", tool_calls=(ToolCallDelta(0, None, "f"),)))
    assert out is not None
    [call] = out.tool_calls
    assert call.id is not None and call.id.startswith("call_") and call.arguments == "{}"


def test_fragments_mode_passes_each_fragment_at_once() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, frag(0, '{"a"', "x", "f")),
        on_next(2, frag(0, ": 1}")),
        on_next(3, FINAL),
        on_completed(3),
    )
    results = scheduler.start(lambda: source.pipe(hold_tool_calls(fragments=True)))
    values = _values(results.messages)
    assert [t for t, _ in values] == [T0 + 1, T0 + 2, T0 + 3]
    assert values[1][1].tool_calls == (ToolCallDelta(0, None, None, ": 1}"),)
    assert values[2][1].finish_reason == "tool_calls"


def test_text_only_answers_are_untouched() -> None:
    hold = ToolCallHold()
    delta = text("plain")
    assert hold(delta) is delta
    assert hold(FINAL) == FINAL  # no call made: the vendor's finish reason stays


def test_fused_into_the_guard_a_held_call_still_feeds_the_idle_deadline() -> None:
    scheduler = TestScheduler()
    # fragments every 2 s for 10 s: idle 3 s never fires although nothing is sent
    events = [
        on_next(
            1 + 2 * i,
            frag(0, "{" if i == 0 else " ", "x" if i == 0 else None, "f" if i == 0 else None),
        )
        for i in range(5)
    ]
    source = scheduler.create_cold_observable(
        *events, on_next(11, frag(0, "}")), on_next(12, FINAL), on_completed(12)
    )
    hold = ToolCallHold()
    results = scheduler.start(
        lambda: source.pipe(guard_attempt(deadlines=Deadlines(5, 3, 100), tag=hold))
    )
    values = _values(results.messages)
    assert [t for t, _ in values] == [T0 + 12]
    assert values[0][1].tool_calls == (ToolCallDelta(0, "x", "f", "{    }"),)
    assert results.messages[-1] == on_completed(T0 + 12)


def test_interleaved_parallel_calls_each_leave_once_they_parse() -> None:
    hold = ToolCallHold()
    assert hold(frag(0, '{"a": ', "x", "f")) is None
    assert hold(frag(1, "{}", "y", "g")) is None  # call 0 does not parse yet: held
    out = hold(frag(0, "1}"))  # back to call 0: call 1 parses, it leaves
    assert out is not None and out.tool_calls == (ToolCallDelta(1, "y", "g", "{}"),)
    last = hold(FINAL)
    assert last is not None and last.tool_calls == (ToolCallDelta(0, "x", "f", '{"a": 1}'),)


def test_a_call_that_goes_on_after_it_was_sent_fails_the_attempt() -> None:
    hold = ToolCallHold("r/m")
    hold(frag(0, "{}", "x", "f"))
    hold(frag(1, "{", "y", "g"))  # call 0 left whole here
    assert hold(frag(0, "   ")) is None  # whitespace after a call is harmless
    with pytest.raises(ProviderError, match="r/m: tool call 0 went on after it was complete"):
        hold(frag(0, '"more"'))
