"""Reconnect delays: exponential backoff with jitter.

attempt 0 -> 0 s (reconnect at once after a close that followed real work);
attempt k -> a random delay in [(1 - jitter) * d, d] with
d = min(maximum, initial * multiplier ** (k - 1)).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """How long to wait before connect attempt `k` after `k` consecutive failures."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial or self.multiplier < 1:
            raise ValueError("backoff needs 0 <= initial <= maximum and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Consecutive failures so far (0, 1, 2, ...) -> seconds to wait before the next try."""
        if attempt <= 0:
            return 0.0
        ceiling = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        return ceiling - rng.uniform(0.0, ceiling * self.jitter)
