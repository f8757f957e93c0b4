"""Exponential backoff with jitter between whole passes over a router's models."""

from __future__ import annotations

import math
import random

from config.models import RetryConfig


def backoff_delay(retry: RetryConfig, attempt: int, rng: random.Random) -> float:
    """Seconds to wait before pass `attempt + 1` (attempt 0 is the first retry).

    In: the router's `RetryConfig`, the retry index and a seeded `rng`.
    Out: `min(max_delay, min_delay * base_multiplier ** attempt)` multiplied by
    `uniform(1 - jitter, 1 + jitter)`, clamped to `[0, max_delay]`. With
    `jitter == 0` the rng is not consumed; defaults give 2, 4, 5, 5, ...
    """
    if attempt < 0:
        raise ValueError("attempt counts retries from 0")
    try:
        raw = retry.min_delay * retry.base_multiplier**attempt
    except OverflowError:
        raw = math.inf
    delay = min(retry.max_delay, raw)
    if retry.jitter > 0:
        delay *= rng.uniform(1 - retry.jitter, 1 + retry.jitter)
    return max(0.0, min(retry.max_delay, delay))


def retry_delays(retry: RetryConfig, rng: random.Random) -> list[float]:
    """The `max_retries` delays of one request, in order (see `backoff_delay`)."""
    return [backoff_delay(retry, attempt, rng) for attempt in range(retry.max_retries)]
