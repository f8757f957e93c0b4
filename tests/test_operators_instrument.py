"""Telemetry operators and the failover fixes, in virtual time."""

from __future__ import annotations

import random
from typing import Any

from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from config.models import LanguageModelConfig, RetryConfig
from observability.metrics import Metrics
from observability.telemetry import Telemetry
from operators.failover import AllModelsUnavailable, failover, retry_passes
from operators.instrument import instrument_attempt
from providers.types import ErrorCategory, ProviderError
from routing.router import ModelRouter
from routing.strategies import PriorityStrategy

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
T0 = ReactiveTest.subscribed
BOOM = ProviderError(ErrorCategory.TRANSIENT, "HTTP 500", status=500)
LABELS = {"endpoint": "chatStream", "router": "r", "provider": "p"}


def telemetry_on(scheduler: TestScheduler) -> tuple[Telemetry, Metrics]:
    metrics = Metrics()
    return Telemetry(lambda: scheduler.to_seconds(scheduler.now), metrics), metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_attempt_success_is_reported_at_the_final_item_before_it_travels_on() -> None:
    scheduler = TestScheduler()
    telemetry, metrics = telemetry_on(scheduler)
    request = telemetry.request("chatStream", "r", "q1")
    # the provider never completes; downstream stops at the final item
    source = scheduler.create_cold_observable(on_next(5, "a"), on_next(7, "F"))
    results = scheduler.start(
        lambda: source.pipe(
            instrument_attempt(request, "m", "p", is_final=lambda x: x == "F"),
            ops.take_while(lambda x: x != "F", inclusive=True),
        )
    )
    assert results.messages == [on_next(T0 + 5, "a"), on_next(T0 + 7, "F"), on_completed(T0 + 7)]
    attempts = "sluice_provider_attempts_total"
    assert sample(metrics, attempts, **LABELS, model="m", outcome="success") == 1
    assert sample(metrics, attempts, **LABELS, model="m", outcome="abandoned") == 0
    assert request.model == "m" and request.provider == "p"


def test_attempt_failure_names_category_and_stage_and_dispose_is_abandoned() -> None:
    scheduler = TestScheduler()
    telemetry, metrics = telemetry_on(scheduler)
    request = telemetry.request("chatStream", "r", "q1")
    mid = scheduler.create_cold_observable(on_next(1, "a"), on_error(2, BOOM))
    scheduler.start(lambda: mid.pipe(instrument_attempt(request, "m1", "p")))
    scheduler2 = TestScheduler()
    timeout = ProviderError(ErrorCategory.TIMEOUT, "t")
    early = scheduler2.create_cold_observable(on_error(3, timeout))
    scheduler2.start(lambda: early.pipe(instrument_attempt(request, "m2", "p")))
    scheduler3 = TestScheduler()
    endless = scheduler3.create_cold_observable(on_next(1, "a"))
    scheduler3.start(lambda: endless.pipe(instrument_attempt(request, "m3", "p")), disposed=500)
    failovers = "sluice_failovers_total"
    assert (
        sample(metrics, failovers, **LABELS, model="m1", category="transient", stage="mid_stream")
        == 1
    )
    assert (
        sample(metrics, failovers, **LABELS, model="m2", category="timeout", stage="before_output")
        == 1
    )
    attempts = "sluice_provider_attempts_total"
    assert sample(metrics, attempts, **LABELS, model="m3", outcome="abandoned") == 1
    assert request.failovers == 2


def test_first_output_and_intervals_in_virtual_time() -> None:
    scheduler = TestScheduler()
    telemetry, metrics = telemetry_on(scheduler)

    def run() -> Any:
        request = telemetry.request("chatStream", "r", "q1")
        attempt = request.attempt("m", "p")

        def at(time: float, action: Any) -> None:
            scheduler.schedule_absolute(time, lambda *_: action())

        at(2.5, attempt.output)
        at(2.5, request.output)
        at(3.0, request.output)
        at(4.0, lambda: request.finish("ok"))
        return request

    scheduler.advance_to(1.0)
    run()
    scheduler.start()
    labels = {**LABELS, "model": "m"}
    ttfc = "sluice_time_to_first_chunk_seconds"
    assert sample(metrics, f"{ttfc}_count", **labels) == 1
    assert sample(metrics, f"{ttfc}_sum", **labels) == 1.5
    assert sample(metrics, "sluice_chunk_interval_seconds_sum", **labels) == 0.5
    duration = "sluice_request_duration_seconds_sum"
    assert sample(metrics, duration, endpoint="chatStream", router="r", outcome="ok") == 3.0
    assert sample(metrics, "sluice_requests_total", **labels, outcome="ok") == 1


def _half_open_router() -> ModelRouter:
    """Model a failed at 0 with a budget of one: cooled down by 10 s, half-open after."""
    model = LanguageModelConfig.model_validate({"id": "a", "error_budget": "1/m", "openai": {}})
    router = ModelRouter("r", [model], PriorityStrategy(), now=0.0)
    router.record_failure("a", BOOM, 0.0)
    assert router.health_states(float(T0)) == {"a": "half_open"}
    return router


def test_failover_records_success_at_the_final_item_not_at_dispose() -> None:
    scheduler = TestScheduler()
    router = _half_open_router()  # the next attempt is its probe
    source = scheduler.create_cold_observable(on_next(2, "x"), on_next(3, "F"))
    results = scheduler.start(
        lambda: failover("r", router, lambda _: source, is_final=lambda x: x == "F").pipe(
            ops.take_while(lambda x: x != "F", inclusive=True)
        )
    )
    assert results.messages[-1] == on_completed(T0 + 3)
    assert router.health_states(scheduler.to_seconds(scheduler.now)) == {"a": "healthy"}


def test_without_is_final_a_disposed_stream_is_only_cancelled() -> None:
    scheduler = TestScheduler()
    router = _half_open_router()
    source = scheduler.create_cold_observable(on_next(2, "x"), on_next(3, "F"))
    scheduler.start(
        lambda: failover("r", router, lambda _: source).pipe(
            ops.take_while(lambda x: x != "F", inclusive=True)
        )
    )
    assert router.health_states(scheduler.to_seconds(scheduler.now)) == {"a": "half_open"}


def test_a_retry_pass_that_finds_every_model_cooling_down_names_earlier_failures() -> None:
    scheduler = TestScheduler()
    models = [LanguageModelConfig.model_validate({"id": "a", "error_budget": "1/m", "openai": {}})]
    router = ModelRouter("r", models, PriorityStrategy(), now=0.0)
    source = scheduler.create_cold_observable(on_error(1, BOOM))
    retry = RetryConfig(max_retries=2, min_delay=2, max_delay=5, jitter=0)
    results = scheduler.start(
        lambda: failover("r", router, lambda _: source).pipe(
            retry_passes(retry, random.Random(0), scheduler=scheduler)
        )
    )
    # pass 1 fails at 1 (a now cools down); passes at 3 and 7 find nothing to try
    last = results.messages[-1]
    assert last.time == T0 + 7
    error = last.value.exception
    assert isinstance(error, AllModelsUnavailable)
    assert "a: transient (HTTP 500)" in str(error)
