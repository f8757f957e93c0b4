"""Virtual-time tests of the time-based operators: deadlines, output, terminal rule."""

from __future__ import annotations

from typing import Any

import pytest
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

from operators.deadlines import deadlines, require_output
from operators.terminal import terminal_rule
from protocol.frames import Frame
from providers.types import ErrorCategory, ProviderError

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe

# TestScheduler ticks are seconds (relative float seconds become ticks of 1 s);
# `start` subscribes at T0, so a cold source's times are offset by T0.
T0 = ReactiveTest.subscribed


def _error_of(messages: list[Recorded[Any]]) -> Exception:
    last = messages[-1]
    assert last.value.kind == "E"
    error: Exception = last.value.exception
    return error


def test_deadlines_pass_a_healthy_stream() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(2, "a"), on_next(4, "b"), on_next(6, "c"), on_completed(7)
    )
    results = scheduler.start(lambda: source.pipe(deadlines(3, 3, 100)))
    assert results.messages == [
        on_next(T0 + 2, "a"),
        on_next(T0 + 4, "b"),
        on_next(T0 + 6, "c"),
        on_completed(T0 + 7),
    ]


def test_deadline_to_first_chunk_fires_at_exactly_its_time() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(50, "late"), on_completed(51))
    results = scheduler.start(lambda: source.pipe(deadlines(30, 5, 100)))
    assert len(results.messages) == 1
    assert results.messages[0].time == T0 + 30
    error = _error_of(results.messages)
    assert isinstance(error, ProviderError)
    assert error.category is ErrorCategory.TIMEOUT
    assert "no first chunk within 30s" in str(error)
    assert source.subscriptions == [subscribe(T0, T0 + 30)]


def test_idle_deadline_fires_after_the_last_chunk() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, "a"), on_next(2, "b"), on_next(40, "c"), on_completed(41)
    )
    results = scheduler.start(lambda: source.pipe(deadlines(5, 10, 100)))
    assert [m.time - T0 for m in results.messages] == [1, 2, 12]
    assert "no chunk for 10s" in str(_error_of(results.messages))
    assert source.subscriptions == [subscribe(T0, T0 + 12)]


def test_overall_deadline_cuts_a_stream_that_never_stops() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(*[on_next(t, t) for t in range(1, 200)])
    results = scheduler.start(lambda: source.pipe(deadlines(5, 5, 20)))
    assert results.messages[-1].time == T0 + 20
    assert "20s deadline" in str(_error_of(results.messages))
    assert len(results.messages) == 20  # 19 items, then the error at 20


def test_deadlines_pass_upstream_errors_through() -> None:
    scheduler = TestScheduler()
    boom = ProviderError(ErrorCategory.TRANSIENT, "boom")
    source = scheduler.create_cold_observable(on_next(1, "a"), on_error(2, boom))
    results = scheduler.start(lambda: source.pipe(deadlines(5, 5, 20)))
    assert results.messages == [on_next(T0 + 1, "a"), on_error(T0 + 2, boom)]


def test_deadlines_need_a_scheduler() -> None:
    with pytest.raises(ValueError, match="needs a scheduler"):
        reactivex.of(1).pipe(deadlines(1, 1, 1)).subscribe()


def test_require_output_fails_an_empty_stream() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(1, ""), on_completed(2))
    results = scheduler.start(lambda: source.pipe(require_output(bool)))
    assert results.messages[0] == on_next(T0 + 1, "")
    error = _error_of(results.messages)
    assert isinstance(error, ProviderError) and error.category is ErrorCategory.EMPTY_OUTPUT


def test_require_output_withholds_a_closing_item_when_nothing_counted() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(1, "END"), on_completed(2))
    results = scheduler.start(
        lambda: source.pipe(
            require_output(lambda s: s not in ("", "END"), closes=lambda s: s == "END")
        ),
    )
    assert len(results.messages) == 1 and results.messages[0].time == T0 + 1
    assert _error_of(results.messages)
    assert source.subscriptions == [subscribe(T0, T0 + 1)]


def test_require_output_passes_when_something_counted() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(1, "x"), on_next(2, "END"), on_completed(3))
    results = scheduler.start(
        lambda: source.pipe(require_output(lambda s: s == "x", closes=lambda s: s == "END")),
    )
    assert results.messages == [on_next(T0 + 1, "x"), on_next(T0 + 2, "END"), on_completed(T0 + 3)]


def _frame(name: str, terminal: bool = False) -> Frame:
    return Frame("r1", {"name": name}, terminal)


def test_terminal_rule_stops_at_the_first_terminal_frame() -> None:
    scheduler = TestScheduler()
    a, t, c = _frame("a"), _frame("T", True), _frame("c")
    source = scheduler.create_cold_observable(
        on_next(1, a), on_next(2, t), on_next(3, c), on_completed(4)
    )
    results = scheduler.start(
        lambda: source.pipe(terminal_rule(lambda e: _frame("E", True), lambda: _frame("I", True))),
    )
    assert results.messages == [on_next(T0 + 1, a), on_next(T0 + 2, t), on_completed(T0 + 2)]
    assert source.subscriptions == [subscribe(T0, T0 + 2)]


def test_terminal_rule_turns_an_error_into_one_terminal_frame() -> None:
    scheduler = TestScheduler()
    a = _frame("a")
    source = scheduler.create_cold_observable(on_next(1, a), on_error(2, RuntimeError("x")))
    seen: list[Exception] = []

    def error_frame(error: Exception) -> Frame:
        seen.append(error)
        return _frame("E", True)

    results = scheduler.start(
        lambda: source.pipe(terminal_rule(error_frame, lambda: _frame("I", True))),
    )
    assert [m.value.value.data for m in results.messages[:-1]] == [{"name": "a"}, {"name": "E"}]
    assert results.messages[-1] == on_completed(T0 + 2)
    assert isinstance(seen[0], RuntimeError)


def test_terminal_rule_adds_a_terminal_frame_to_a_silent_end() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_completed(5))
    results = scheduler.start(
        lambda: source.pipe(terminal_rule(lambda e: _frame("E", True), lambda: _frame("I", True))),
    )
    assert results.messages[0].time == T0 + 5
    assert results.messages[0].value.value.data == {"name": "I"}
    assert results.messages[0].value.value.terminal
    assert results.messages[1] == on_completed(T0 + 5)
