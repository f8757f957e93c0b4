"""Sample-rate conversion of 16-bit PCM with soxr (a well-kept, high-quality resampler).

`resample(samples, from_rate, to_rate)` converts a whole buffer; `Resampler` converts
a stream chunk by chunk without clicks at chunk boundaries (soxr keeps the filter
state), and `flush()` returns the tail at the end.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

Int16Array = npt.NDArray[np.int16]


def resample(samples: Int16Array, from_rate: int, to_rate: int, channels: int = 1) -> Int16Array:
    """Whole buffer of int16 samples (interleaved if `channels` > 1) at `from_rate` -> `to_rate`."""
    if from_rate == to_rate or samples.size == 0:
        return samples
    shaped = samples.reshape(-1, channels) if channels > 1 else samples
    out: Int16Array = soxr.resample(shaped, from_rate, to_rate, quality="HQ")
    return out.reshape(-1).astype(np.int16, copy=False)


class Resampler:
    """Streaming int16 resampler: `process(chunk)` per chunk, then `flush()` once."""

    def __init__(self, from_rate: int, to_rate: int, channels: int = 1) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self.channels = channels
        self._stream = (
            None
            if from_rate == to_rate
            else soxr.ResampleStream(from_rate, to_rate, channels, dtype="int16", quality="HQ")
        )

    def process(self, samples: Int16Array) -> Int16Array:
        """One chunk in (int16, interleaved), the resampled samples available so far out."""
        if self._stream is None:
            return samples
        shaped = samples.reshape(-1, self.channels) if self.channels > 1 else samples
        out: Int16Array = self._stream.resample_chunk(shaped)
        return out.reshape(-1)

    def flush(self) -> Int16Array:
        """The samples still inside the filter at the end of the stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        out: Int16Array = self._stream.resample_chunk(
            np.zeros((0, self.channels) if self.channels > 1 else 0, dtype=np.int16), last=True
        )
        return out.reshape(-1)
