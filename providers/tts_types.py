"""The shapes every text-to-speech adapter speaks, independent of any vendor.

Flow: a `SpeechRequest` (one sentence, a voice, a preferred sample rate) goes into
an adapter; an async iterator of `PcmChunk`s comes out: 16-bit mono PCM at the
rate the adapter declares (`sample_rate_for`), in order, for that one sentence.
Failures leave an adapter only as `ProviderError` (providers/types.py), classified
once. Closing the iterator stops synthesis (and closes the upstream call) at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """One sentence to synthesize.

    `voice` is None for the adapter's configured default; `sample_rate` is the
    rate the adapter was asked for through `sample_rate_for` (its native rate);
    `context_id` is unique per attempt (for vendors that multiplex contexts).
    """

    text: str
    voice: str | None
    sample_rate: int
    context_id: str


@dataclass(frozen=True, slots=True)
class PcmChunk:
    """A piece of synthesized audio: int16 mono samples at `sample_rate` Hz."""

    samples: Int16Array
    sample_rate: int

    @property
    def duration_seconds(self) -> float:
        """How long the chunk plays."""
        return len(self.samples) / self.sample_rate


def pcm_from_bytes(data: bytes, sample_rate: int) -> PcmChunk:
    """Little-endian 16-bit PCM bytes (an even count) -> a `PcmChunk`."""
    return PcmChunk(np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False), sample_rate)


class SampleCarry:
    """Re-aligns a byte stream on 16-bit sample boundaries (HTTP chunks may split one).

    bytes in:  b"\\x01\\x02\\x03" then b"\\x04"   ->   out: b"\\x01\\x02", then b"\\x03\\x04"
    """

    def __init__(self) -> None:
        self._odd = b""

    def push(self, data: bytes) -> bytes:
        """Bytes in; the longest whole-sample prefix of what is pending out."""
        data = self._odd + data
        whole = len(data) - (len(data) % 2)
        self._odd = data[whole:]
        return data[:whole]

    @property
    def pending(self) -> int:
        """Bytes held back (0 or 1); 1 at the end of a stream means it was cut mid-sample."""
        return len(self._odd)


class SpeechProvider(Protocol):
    """A vendor adapter for one configured speak model.

    `synthesize` is an async iterator of PCM chunks for one sentence (it raises
    `ProviderError`; when the consumer stops iterating it closes the upstream).
    """

    provider_id: str
    model_name: str

    def sample_rate_for(self, preferred: int) -> int:
        """The rate this adapter will produce when the client wants `preferred` Hz."""
        ...

    def synthesize(self, request: SpeechRequest) -> AsyncIterator[PcmChunk]:
        """Yield the sentence's audio as it is synthesized."""
        ...

    async def aclose(self) -> None:
        """Release whatever the adapter holds (threads, connections)."""
        ...
