"""Backoff between retry passes: exact delays without jitter, bounds with a seeded rng."""

from __future__ import annotations

import random

import pytest

from config.models import RetryConfig
from routing.backoff import backoff_delay, retry_delays


def test_defaults_without_jitter_give_2_4_5_5() -> None:
    retry = RetryConfig(jitter=0.0)
    rng = random.Random(1)
    assert [backoff_delay(retry, attempt, rng) for attempt in range(4)] == [2.0, 4.0, 5.0, 5.0]


def test_retry_delays_has_one_delay_per_retry() -> None:
    rng = random.Random(1)
    assert retry_delays(RetryConfig(jitter=0.0), rng) == [2.0, 4.0, 5.0]
    assert retry_delays(RetryConfig(jitter=0.0, max_retries=5), rng) == [2.0, 4.0, 5.0, 5.0, 5.0]
    assert retry_delays(RetryConfig(max_retries=0), rng) == []


def test_zero_jitter_does_not_consume_the_rng() -> None:
    rng = random.Random(7)
    state = rng.getstate()
    retry_delays(RetryConfig(jitter=0.0, max_retries=4), rng)
    assert rng.getstate() == state


def test_other_multipliers_and_delays() -> None:
    retry = RetryConfig(jitter=0.0, min_delay=0.5, max_delay=10.0, base_multiplier=3.0)
    rng = random.Random(0)
    assert [backoff_delay(retry, attempt, rng) for attempt in range(5)] == [
        0.5,
        1.5,
        4.5,
        10.0,
        10.0,
    ]
    flat = RetryConfig(jitter=0.0, min_delay=1.0, base_multiplier=1.0)
    assert [backoff_delay(flat, attempt, rng) for attempt in range(3)] == [1.0, 1.0, 1.0]


def test_jitter_matches_a_seeded_uniform_draw() -> None:
    retry = RetryConfig(jitter=0.1)
    expected_rng = random.Random(42)
    expected = [
        min(5.0, base * expected_rng.uniform(0.9, 1.1)) for base in (2.0, 4.0, 5.0, 5.0, 5.0)
    ]
    rng = random.Random(42)
    delays = [backoff_delay(retry, attempt, rng) for attempt in range(5)]
    assert delays == expected
    assert delays != [2.0, 4.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize("seed", range(20))
def test_jittered_delays_stay_within_bounds(seed: int) -> None:
    retry = RetryConfig(jitter=0.1)
    rng = random.Random(seed)
    delays = [backoff_delay(retry, attempt, rng) for attempt in range(4)]
    assert 1.8 <= delays[0] <= 2.2
    assert 3.6 <= delays[1] <= 4.4
    assert 4.5 <= delays[2] <= 5.0
    assert 4.5 <= delays[3] <= 5.0


@pytest.mark.parametrize("seed", range(20))
def test_full_jitter_never_goes_below_zero_or_above_max(seed: int) -> None:
    retry = RetryConfig(jitter=1.0, min_delay=1.0, max_delay=3.0)
    rng = random.Random(seed)
    for delay in retry_delays(retry.model_copy(update={"max_retries": 6}), rng):
        assert 0.0 <= delay <= 3.0


def test_same_seed_same_delays() -> None:
    retry = RetryConfig(max_retries=6)
    assert retry_delays(retry, random.Random(3)) == retry_delays(retry, random.Random(3))


def test_huge_attempt_is_capped_not_an_overflow() -> None:
    retry = RetryConfig(jitter=0.0)
    assert backoff_delay(retry, 100_000, random.Random(0)) == 5.0


def test_negative_attempt_is_rejected() -> None:
    with pytest.raises(ValueError):
        backoff_delay(RetryConfig(), -1, random.Random(0))
