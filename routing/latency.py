"""A latency moving average with a warm-up, for the least_latency strategy."""

from __future__ import annotations

import math


class MovingAverage:
    """Average of latency samples: a plain mean while warming up, then an EMA.

    In: samples (seconds) through `add`; samples that are not positive finite
    numbers are ignored. Out: `value` (None until the first sample) and `warmed`.

    The first `warmup_samples` samples are averaged plainly; each later sample
    moves the value by `value = decay * sample + (1 - decay) * value`.
    `warmed` turns True once `warmup_samples` samples (and at least one) are in.
    """

    def __init__(self, decay: float = 0.06, warmup_samples: int = 3) -> None:
        if not 0 < decay <= 1:
            raise ValueError("decay must be in (0, 1]")
        if warmup_samples < 0:
            raise ValueError("warmup_samples cannot be negative")
        self.decay = decay
        self.warmup_samples = warmup_samples
        self.value: float | None = None
        self.samples = 0

    @property
    def warmed(self) -> bool:
        """True once the warm-up samples have been seen (and at least one sample)."""
        return self.samples >= max(1, self.warmup_samples)

    def add(self, sample: float) -> None:
        """Fold one latency sample (seconds) into the average."""
        if not (sample > 0 and math.isfinite(sample)):
            return
        self.samples += 1
        if self.value is None:
            self.value = sample
        elif self.samples <= self.warmup_samples:
            self.value += (sample - self.value) / self.samples
        else:
            self.value = self.decay * sample + (1 - self.decay) * self.value
