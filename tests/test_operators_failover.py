"""Failover and pass retry in virtual time, against the real ModelRouter."""

from __future__ import annotations

import random
from typing import Any

import reactivex
from reactivex import Observable
from reactivex.testing import ReactiveTest, TestScheduler

from config.models import LanguageModelConfig, RetryConfig
from operators.attempt import Deadlines, guard_attempt
from operators.failover import AllModelsUnavailable, Budget, Reset, failover, retry_passes
from providers.types import ErrorCategory, ProviderError
from routing.router import ModelRouter
from routing.strategies import PriorityStrategy

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
T0 = ReactiveTest.subscribed

BOOM = ProviderError(ErrorCategory.TRANSIENT, "HTTP 500", status=500)


def _router(*ids: str) -> ModelRouter:
    models = [LanguageModelConfig.model_validate({"id": i, "openai": {}}) for i in ids]
    return ModelRouter("r", models, PriorityStrategy(), now=0.0)


def _values(messages: list[Any]) -> list[Any]:
    return [(m.time - T0, m.value.value) for m in messages if m.value.kind == "N"]


def test_failure_before_output_fails_over_silently() -> None:
    scheduler = TestScheduler()
    sources = {
        "a": scheduler.create_cold_observable(on_error(3, BOOM)),
        "b": scheduler.create_cold_observable(on_next(1, "x"), on_completed(2)),
    }
    router = _router("a", "b")
    results = scheduler.start(lambda: failover("r", router, lambda m: sources[m]))
    assert results.messages == [on_next(T0 + 4, "x"), on_completed(T0 + 5)]
    assert router.health_states(0.0) == {"a": "healthy", "b": "healthy"}


def test_failure_after_output_emits_a_reset_then_restarts() -> None:
    scheduler = TestScheduler()
    sources = {
        "a": scheduler.create_cold_observable(on_next(1, "p"), on_error(2, BOOM)),
        "b": scheduler.create_cold_observable(on_next(1, "x"), on_completed(2)),
    }
    results = scheduler.start(lambda: failover("r", _router("a", "b"), lambda m: sources[m]))
    values = _values(results.messages)
    assert values[0] == (1, "p")
    assert values[1][0] == 2 and isinstance(values[1][1], Reset) and values[1][1].model_id == "a"
    assert values[2] == (3, "x")
    assert results.messages[-1] == on_completed(T0 + 4)


def test_all_models_failing_ends_with_all_models_unavailable_naming_each() -> None:
    scheduler = TestScheduler()
    sources = {
        "a": scheduler.create_cold_observable(on_error(1, BOOM)),
        "b": scheduler.create_cold_observable(
            on_error(1, ProviderError(ErrorCategory.TIMEOUT, "t"))
        ),
    }
    results = scheduler.start(lambda: failover("r", _router("a", "b"), lambda m: sources[m]))
    error = results.messages[-1].value.exception
    assert results.messages[-1].time == T0 + 2
    assert isinstance(error, AllModelsUnavailable)
    assert [m for m, _ in error.failures] == ["a", "b"]
    assert "a: transient (HTTP 500)" in str(error) and "b: timeout" in str(error)


def test_a_bad_request_stops_failover_at_once() -> None:
    scheduler = TestScheduler()
    bad = ProviderError(ErrorCategory.BAD_REQUEST, "max_tokens too large", status=400)
    tried: list[str] = []

    def attempt(model: str) -> Observable[str]:
        tried.append(model)
        return scheduler.create_cold_observable(on_error(1, bad))

    router = _router("a", "b")
    results = scheduler.start(lambda: failover("r", router, attempt))
    assert tried == ["a"]
    assert results.messages[-1].value.exception is bad


def test_an_unhealthy_model_is_not_tried() -> None:
    scheduler = TestScheduler()
    router = _router("a", "b")
    auth = ProviderError(ErrorCategory.AUTH, "bad key", status=401)
    router.record_failure("a", auth, 0.0)
    tried: list[str] = []

    def attempt(model: str) -> Observable[str]:
        tried.append(model)
        return reactivex.of("ok")

    scheduler.start(lambda: failover("r", router, attempt))
    assert tried == ["b"]


def test_disposing_mid_attempt_releases_the_half_open_probe() -> None:
    scheduler = TestScheduler()
    models = [
        LanguageModelConfig.model_validate(
            {"id": "a", "error_budget": "1/s", "health": {"cooldown": "1s"}, "openai": {}}
        )
    ]
    router = ModelRouter("r", models, PriorityStrategy(), now=0.0)
    router.record_failure("a", BOOM, 0.0)
    assert router.health_states(300.0)["a"] == "half_open"
    never = scheduler.create_cold_observable(on_next(500, "late"))
    scheduler.start(lambda: failover("r", router, lambda m: never), disposed=300)
    assert router.available("a", 400.0)


def test_retry_passes_backs_off_two_four_five_seconds() -> None:
    scheduler = TestScheduler()
    subscribed_at: list[float] = []

    def attempt(model: str) -> Observable[str]:
        subscribed_at.append(scheduler.clock - T0)
        return reactivex.throw(BOOM)

    retry = RetryConfig(max_retries=3, min_delay=2, max_delay=5, base_multiplier=2, jitter=0)
    models = [
        LanguageModelConfig.model_validate({"id": "a", "error_budget": "100/s", "openai": {}})
    ]
    router = ModelRouter("r", models, PriorityStrategy(), now=0.0)
    results = scheduler.start(
        lambda: failover("r", router, attempt).pipe(retry_passes(retry, random.Random(1)))
    )
    assert subscribed_at == [0, 2, 6, 11]
    assert results.messages[-1].time == T0 + 11
    assert isinstance(results.messages[-1].value.exception, AllModelsUnavailable)


def test_retry_passes_gives_up_at_once_on_a_final_error() -> None:
    scheduler = TestScheduler()
    bad = ProviderError(ErrorCategory.BAD_REQUEST, "no", status=400)
    calls: list[float] = []

    def attempt(model: str) -> Observable[str]:
        calls.append(scheduler.clock)
        return reactivex.throw(bad)

    retry = RetryConfig(max_retries=3, jitter=0)
    results = scheduler.start(
        lambda: failover("r", _router("a"), attempt).pipe(retry_passes(retry, random.Random(1)))
    )
    assert len(calls) == 1
    assert results.messages[-1].time == T0


def test_retry_pass_recovers_when_a_model_comes_back() -> None:
    scheduler = TestScheduler()
    outcomes = iter([reactivex.throw(BOOM), reactivex.of("ok")])
    retry = RetryConfig(max_retries=3, min_delay=2, jitter=0)
    results = scheduler.start(
        lambda: failover("r", _router("a"), lambda m: next(outcomes)).pipe(
            retry_passes(retry, random.Random(1))
        )
    )
    assert results.messages == [on_next(T0 + 2, "ok"), on_completed(T0 + 2)]


# --------------------------------------------------------------------------------------
# the request's budget and the continue handoff


def _guarded(scheduler: TestScheduler, budget: Budget, source: Observable[str]) -> Observable[str]:
    """An attempt under 30 s first-item and 120 s overall deadlines, cut by `budget`."""
    limits = Deadlines(30.0, 30.0, 120.0, "chunk", budget.end)
    return source.pipe(guard_attempt(deadlines=limits, scheduler=scheduler))


def test_budget_ends_a_stalled_only_model_inside_the_budget() -> None:
    scheduler = TestScheduler()
    budget = Budget(5.0)
    never: Observable[str] = reactivex.never()
    retry = RetryConfig(max_retries=3, min_delay=2, jitter=0)
    results = scheduler.start(
        lambda: failover(
            "r", _router("a"), lambda m: _guarded(scheduler, budget, never), budget=budget
        ).pipe(retry_passes(retry, random.Random(1), budget=budget))
    )
    (message,) = results.messages
    assert message.time == T0 + 5
    error = message.value.exception
    assert isinstance(error, AllModelsUnavailable)
    assert "a: timeout: the request's deadline ran out during this attempt" in str(error)
    assert error.reason == "the request's 5s deadline ran out"


def test_budget_cuts_the_second_model_short_and_starts_no_third() -> None:
    scheduler = TestScheduler()
    budget = Budget(10.0)
    tried: list[tuple[str, float]] = []
    sources = {
        "a": scheduler.create_cold_observable(on_error(4, BOOM)),
        "b": scheduler.create_cold_observable(on_next(100, "late")),
        "c": scheduler.create_cold_observable(on_next(1, "never asked"), on_completed(2)),
    }

    def attempt(model: str) -> Observable[str]:
        tried.append((model, scheduler.clock - T0))
        return _guarded(scheduler, budget, sources[model])

    results = scheduler.start(lambda: failover("r", _router("a", "b", "c"), attempt, budget=budget))
    assert tried == [("a", 0), ("b", 4)]
    assert results.messages[-1].time == T0 + 10
    assert isinstance(results.messages[-1].value.exception, AllModelsUnavailable)


def test_retry_passes_end_at_once_when_every_model_is_disabled() -> None:
    scheduler = TestScheduler()
    router = _router("a", "b")
    auth = ProviderError(ErrorCategory.AUTH, "bad key", status=401)
    budget = Budget(60.0, ["a", "b"], router.unavailable_until)
    retry = RetryConfig(max_retries=3, min_delay=2, jitter=0)
    results = scheduler.start(
        lambda: failover(
            "r",
            router,
            lambda m: scheduler.create_cold_observable(on_error(1, auth)),
            budget=budget,
        ).pipe(retry_passes(retry, random.Random(1), budget=budget))
    )
    (message,) = results.messages
    assert message.time == T0 + 2  # both attempts, no backoff after them
    error = message.value.exception
    assert isinstance(error, AllModelsUnavailable)
    assert error.reason == (
        "no model can be tried again within the request's 60s deadline (a disabled, b disabled)"
    )


def test_retry_passes_end_at_once_when_a_cooldown_outlasts_the_budget() -> None:
    scheduler = TestScheduler()
    router = _router("a")
    limited = ProviderError(ErrorCategory.RATE_LIMITED, "slow down", status=429, retry_after=30)
    budget = Budget(10.0, ["a"], router.unavailable_until)
    retry = RetryConfig(max_retries=3, min_delay=2, jitter=0)
    results = scheduler.start(
        lambda: failover(
            "r",
            router,
            lambda m: scheduler.create_cold_observable(on_error(1, limited)),
            budget=budget,
        ).pipe(retry_passes(retry, random.Random(1), budget=budget))
    )
    (message,) = results.messages
    assert message.time == T0 + 1
    assert "(a cooling down)" in str(message.value.exception)


def test_retry_passes_wait_for_a_cooldown_that_ends_inside_the_budget() -> None:
    scheduler = TestScheduler()
    models = [
        LanguageModelConfig.model_validate(
            {"id": "a", "error_budget": "1/s", "health": {"cooldown": "1s"}, "openai": {}}
        )
    ]
    router = ModelRouter("r", models, PriorityStrategy(), now=0.0)
    budget = Budget(60.0, ["a"], router.unavailable_until)
    outcomes = iter([reactivex.throw(BOOM), reactivex.of("ok")])
    retry = RetryConfig(max_retries=3, min_delay=2, jitter=0)
    results = scheduler.start(
        lambda: failover("r", router, lambda m: next(outcomes), budget=budget).pipe(
            retry_passes(retry, random.Random(1), budget=budget)
        )
    )
    assert results.messages == [on_next(T0 + 2, "ok"), on_completed(T0 + 2)]


def test_retry_passes_end_when_the_next_pass_would_start_after_the_budget() -> None:
    scheduler = TestScheduler()
    budget = Budget(5.0)
    retry = RetryConfig(max_retries=3, min_delay=2, jitter=0)
    results = scheduler.start(
        lambda: failover(
            "r",
            _router("a"),
            lambda m: scheduler.create_cold_observable(on_error(4, BOOM)),
            budget=budget,
        ).pipe(retry_passes(retry, random.Random(1), budget=budget))
    )
    (message,) = results.messages
    assert message.time == T0 + 4
    assert "no time for another pass within the request's 5s deadline" in str(
        message.value.exception
    )


class _Carry:
    """A handoff that lets `continues` models go on and restarts the others."""

    def __init__(self, continues: set[str]) -> None:
        self.continues = continues
        self.broken: list[tuple[str, BaseException]] = []

    def broke(self, model_id: str, error: BaseException) -> None:
        self.broken.append((model_id, error))

    def before(self, model_id: str) -> Reset | None:
        if not self.broken or model_id in self.continues:
            return None
        model, error = self.broken.pop()
        return Reset(model, error)


def test_a_handoff_that_continues_emits_no_reset() -> None:
    scheduler = TestScheduler()
    sources = {
        "a": scheduler.create_cold_observable(on_next(1, "p"), on_error(2, BOOM)),
        "b": scheduler.create_cold_observable(on_next(1, "q"), on_completed(2)),
    }
    carry = _Carry({"b"})
    results = scheduler.start(
        lambda: failover("r", _router("a", "b"), lambda m: sources[m], handoff=carry)
    )
    assert results.messages == [
        on_next(T0 + 1, "p"),
        on_next(T0 + 3, "q"),
        on_completed(T0 + 4),
    ]
    assert carry.broken == [("a", BOOM)]


def test_a_handoff_that_restarts_emits_the_reset_right_before_the_next_model() -> None:
    scheduler = TestScheduler()
    sources = {
        "a": scheduler.create_cold_observable(on_next(1, "p"), on_error(2, BOOM)),
        "b": scheduler.create_cold_observable(on_error(1, BOOM)),
    }
    carry = _Carry(set())
    results = scheduler.start(
        lambda: failover("r", _router("a", "b"), lambda m: sources[m], handoff=carry)
    )
    values = _values(results.messages)
    assert values[0] == (1, "p")
    assert values[1][0] == 2 and values[1][1] == Reset("a", BOOM)
    assert results.messages[-1].time == T0 + 3
    assert isinstance(results.messages[-1].value.exception, AllModelsUnavailable)
