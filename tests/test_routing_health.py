"""TokenBucket and ModelHealth: refill math and every health transition, at exact times."""

from __future__ import annotations

import math
from typing import Any

import pytest

from config.models import ErrorBudget, HealthConfig
from providers.types import ErrorCategory, ProviderError
from routing.health import ModelHealth, TokenBucket


def transient() -> ProviderError:
    return ProviderError(ErrorCategory.TRANSIENT, "upstream 503", status=503)


def make_health(
    budget: int = 3,
    unit: float = 60.0,
    cooldown: float = 10.0,
    rate_limit_cooldown: float = 30.0,
    now: float = 0.0,
    events: list[tuple[str, dict[str, Any]]] | None = None,
) -> ModelHealth:
    sink = None if events is None else (lambda name, fields: events.append((name, fields)))
    return ModelHealth(
        "m1",
        ErrorBudget(budget=budget, unit_seconds=unit),
        HealthConfig(cooldown=cooldown, rate_limit_cooldown=rate_limit_cooldown),
        now=now,
        on_event=sink,
    )


# -- TokenBucket ---------------------------------------------------------------------


def test_bucket_starts_full_and_empties_one_token_per_take() -> None:
    bucket = TokenBucket(3, 60.0, now=0.0)
    assert bucket.tokens(0.0) == 3.0
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.tokens(0.0) == 0.0


def test_bucket_refills_continuously_at_capacity_per_period() -> None:
    bucket = TokenBucket(3, 60.0, now=100.0)
    for _ in range(3):
        assert bucket.take(100.0)
    # 3 tokens per 60 s = one token every 20 s.
    assert bucket.tokens(110.0) == pytest.approx(0.5)
    assert not bucket.take(110.0)
    assert bucket.tokens(120.0) == pytest.approx(1.0)
    assert bucket.take(120.0)
    assert bucket.tokens(120.0) == pytest.approx(0.0)
    assert bucket.tokens(150.0) == pytest.approx(1.5)


def test_bucket_refill_is_capped_at_capacity() -> None:
    bucket = TokenBucket(2, 10.0, now=0.0)
    assert bucket.take(0.0)
    assert bucket.tokens(1000.0) == 2.0
    assert bucket.take(1000.0) and bucket.take(1000.0)
    assert not bucket.take(1000.0)


def test_bucket_ignores_time_going_backwards() -> None:
    bucket = TokenBucket(1, 10.0, now=50.0)
    assert bucket.take(50.0)
    assert bucket.tokens(40.0) == 0.0
    assert bucket.tokens(55.0) == pytest.approx(0.5)


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 10.0, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(1, 0.0, now=0.0)


# -- budget exhaustion and half-open -------------------------------------------------


def test_new_model_is_healthy_and_available() -> None:
    health = make_health()
    assert health.state(0.0) == "healthy"
    assert health.available(0.0)
    assert health.unavailable_until(0.0) is None


def test_budget_trips_at_the_nth_failure_and_cools_down() -> None:
    health = make_health(budget=3, cooldown=10.0)
    health.record_failure(transient(), 5.0)
    health.record_failure(transient(), 5.0)
    assert health.state(5.0) == "healthy"
    assert health.available(5.0)
    health.record_failure(transient(), 5.0)
    assert health.state(5.0) == "unhealthy"
    assert not health.available(5.0)
    assert health.unavailable_until(5.0) == 15.0
    assert health.state(14.999) == "unhealthy"
    assert health.state(15.0) == "half_open"
    assert health.available(15.0)
    assert health.unavailable_until(15.0) is None


def test_budget_refill_absorbs_spread_out_failures() -> None:
    # 3 errors per 60 s refill one token every 20 s: one failure per 20 s never trips.
    health = make_health(budget=3, unit=60.0)
    for now in (0.0, 20.0, 40.0, 60.0, 80.0, 100.0):
        health.record_failure(transient(), now)
        assert health.state(now) == "healthy"
    # The bucket holds 2 tokens at t=100; two more failures right away empty it.
    health.record_failure(transient(), 100.0)
    assert health.state(100.0) == "healthy"
    health.record_failure(transient(), 100.0)
    assert health.state(100.0) == "unhealthy"
    assert health.unavailable_until(100.0) == 110.0


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("boom"),
        ConnectionResetError("reset"),
        ProviderError(ErrorCategory.TIMEOUT, "no first chunk"),
        ProviderError(ErrorCategory.EMPTY_OUTPUT, "said nothing"),
        ProviderError(ErrorCategory.PROTOCOL, "truncated"),
    ],
)
def test_other_failures_and_plain_exceptions_are_charged(error: BaseException) -> None:
    health = make_health(budget=1, cooldown=4.0)
    health.record_failure(error, 1.0)
    assert health.state(1.0) == "unhealthy"
    assert health.unavailable_until(1.0) == 5.0


def test_half_open_allows_exactly_one_probe() -> None:
    health = make_health(budget=1, cooldown=10.0)
    health.record_failure(transient(), 0.0)
    assert health.available(10.0)
    health.begin_attempt(10.0)
    assert health.state(10.0) == "half_open"
    assert health.probing(10.0)
    assert not health.available(10.0)
    assert not health.available(11.0)
    health.begin_attempt(11.0)  # a second caller that did not check: still one probe
    assert not health.available(12.0)


def test_successful_probe_restores_healthy() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    health = make_health(budget=1, cooldown=10.0, events=events)
    health.record_failure(transient(), 0.0)
    health.begin_attempt(10.0)
    health.record_success(12.0)
    assert health.state(12.0) == "healthy"
    assert health.available(12.0)
    assert not health.probing(12.0)
    assert [name for name, _ in events] == ["model_unhealthy", "model_recovered"]
    assert events[0][1] == {"model_id": "m1", "reason": "transient", "until": 10.0}
    assert events[1][1] == {"model_id": "m1"}


def test_success_does_not_refill_the_budget() -> None:
    # 1 error per 100 s: at t=10 the bucket holds 0.1 token, so the next failure
    # after recovery trips the model again at once.
    health = make_health(budget=1, unit=100.0, cooldown=10.0)
    health.record_failure(transient(), 0.0)
    health.begin_attempt(10.0)
    health.record_success(10.0)
    health.record_failure(transient(), 10.0)
    assert health.state(10.0) == "unhealthy"
    assert health.unavailable_until(10.0) == 20.0


def test_failed_probe_cools_down_again_even_with_budget_left() -> None:
    # 2 errors per second: the bucket is full again by the time the probe runs.
    health = make_health(budget=2, unit=1.0, cooldown=10.0)
    health.record_failure(transient(), 0.0)
    health.record_failure(transient(), 0.0)
    assert health.unavailable_until(0.0) == 10.0
    health.begin_attempt(10.0)
    health.record_failure(transient(), 13.0)
    assert health.state(13.0) == "unhealthy"
    assert health.unavailable_until(13.0) == 23.0
    assert health.state(22.999) == "unhealthy"
    assert health.state(23.0) == "half_open"
    assert health.available(23.0)


def test_success_during_cooldown_does_not_cut_it_short() -> None:
    health = make_health(budget=1, cooldown=10.0)
    health.record_failure(transient(), 0.0)
    health.record_success(3.0)  # an attempt that started before the failure
    assert health.state(3.0) == "unhealthy"
    assert health.unavailable_until(3.0) == 10.0


def test_cancelled_probe_frees_the_slot() -> None:
    health = make_health(budget=1, cooldown=10.0)
    health.record_failure(transient(), 0.0)
    health.begin_attempt(10.0)
    assert not health.available(10.0)
    health.cancel_attempt(11.0)
    assert health.state(11.0) == "half_open"
    assert health.available(11.0)


def test_begin_attempt_on_a_healthy_model_claims_nothing() -> None:
    health = make_health()
    health.begin_attempt(0.0)
    assert health.available(0.0)
    assert not health.probing(0.0)


# -- rate limits ---------------------------------------------------------------------


def test_429_with_retry_after_cools_down_for_that_long_without_charging() -> None:
    health = make_health(budget=3, rate_limit_cooldown=30.0)
    health.record_failure(
        ProviderError(ErrorCategory.RATE_LIMITED, "slow down", status=429, retry_after=7.0), 100.0
    )
    assert health.state(100.0) == "unhealthy"
    assert health.unavailable_until(100.0) == 107.0
    assert health.state(106.999) == "unhealthy"
    assert health.state(107.0) == "half_open"
    # The error budget was not touched: 3 more failures are needed to trip it.
    health.begin_attempt(107.0)
    health.record_success(107.0)
    health.record_failure(transient(), 107.0)
    health.record_failure(transient(), 107.0)
    assert health.state(107.0) == "healthy"


def test_429_without_retry_after_uses_the_rate_limit_cooldown() -> None:
    health = make_health(cooldown=10.0, rate_limit_cooldown=45.0)
    health.record_failure(ProviderError(ErrorCategory.RATE_LIMITED, "slow down", status=429), 5.0)
    assert health.unavailable_until(5.0) == 50.0
    assert health.state(49.9) == "unhealthy"
    assert health.state(50.0) == "half_open"


def test_429_never_shortens_a_longer_cooldown() -> None:
    health = make_health()
    health.record_failure(ProviderError(ErrorCategory.RATE_LIMITED, "x", retry_after=60.0), 0.0)
    health.record_failure(ProviderError(ErrorCategory.RATE_LIMITED, "x", retry_after=5.0), 1.0)
    assert health.unavailable_until(1.0) == 60.0


# -- auth ----------------------------------------------------------------------------


def test_auth_failure_disables_permanently_with_one_loud_event() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    health = make_health(events=events)
    health.record_failure(ProviderError(ErrorCategory.AUTH, "bad key", status=401), 3.0)
    assert health.state(3.0) == "disabled"
    assert not health.available(3.0)
    assert health.state(1e9) == "disabled"
    assert not health.available(1e9)
    assert health.unavailable_until(3.0) == math.inf
    health.record_failure(ProviderError(ErrorCategory.AUTH, "bad key", status=403), 4.0)
    health.record_failure(transient(), 5.0)
    health.record_success(6.0)
    assert health.state(6.0) == "disabled"
    assert len(events) == 1
    name, fields = events[0]
    assert name == "model_disabled"
    assert fields["model_id"] == "m1"
    assert fields["status"] == 401
    assert "m1" in fields["message"]


def test_reset_reenables_a_disabled_model_with_a_full_budget() -> None:
    health = make_health(budget=2)
    health.record_failure(transient(), 0.0)
    health.record_failure(ProviderError(ErrorCategory.AUTH, "bad key", status=401), 0.0)
    health.reset()
    assert health.state(0.0) == "healthy"
    health.record_failure(transient(), 0.0)
    assert health.state(0.0) == "healthy"  # the budget is full again: 2 left, 1 taken


def test_reset_clears_a_cooldown_and_a_probe() -> None:
    health = make_health(budget=1)
    health.record_failure(transient(), 0.0)
    health.begin_attempt(10.0)
    health.reset()
    assert health.state(10.0) == "healthy"
    assert health.available(10.0)


# -- client errors -------------------------------------------------------------------


def test_bad_request_is_not_charged() -> None:
    health = make_health(budget=1)
    for _ in range(5):
        health.record_failure(ProviderError(ErrorCategory.BAD_REQUEST, "bad", status=400), 0.0)
    assert health.state(0.0) == "healthy"
    health.record_failure(transient(), 0.0)
    assert health.state(0.0) == "unhealthy"


def test_bad_request_during_a_probe_frees_the_slot_and_stays_half_open() -> None:
    health = make_health(budget=1, cooldown=10.0)
    health.record_failure(transient(), 0.0)
    health.begin_attempt(10.0)
    health.record_failure(ProviderError(ErrorCategory.BAD_REQUEST, "bad", status=400), 11.0)
    assert health.state(11.0) == "half_open"
    assert health.available(11.0)
