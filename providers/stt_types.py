"""The shapes every speech-to-text adapter speaks, independent of any vendor.

Flow: an `SttRequest` (one VAD segment's audio, PCM16 mono at the rate the
provider asked for, plus language and interim settings) goes into an adapter's
`transcribe`; an async iterator of `SttEvent`s comes out:

    SttInterim* / SttCommitted* ... then exactly one SttFinal (the last item)

Texts are cumulative over the audio the attempt was given: an `SttInterim` is
the whole hypothesis so far, an `SttCommitted(text, through_ms)` says that the
audio up to `through_ms` (from the start of the attempt's audio) is final and
reads `text` (streaming vendors such as Deepgram), and `SttFinal` is the text of
all of it. When an attempt fails, the listen pipeline replays the audio after
the last commit to the next model and puts the committed text in front.

`SegmentAudio` is the buffer between the pipeline and the adapters: the VAD
appends to it as speech arrives (`append`, `finish`, on the event loop), and an
adapter reads it live (`chunks`) or whole after the segment ends (`whole`). It
keeps every byte until the segment's transcript is delivered, which is what
makes replay to another model possible.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from reactivex import Observable
from reactivex.subject import AsyncSubject

from audio.resample import Resampler, resample


@dataclass(frozen=True, slots=True)
class SttInterim:
    """The attempt's whole hypothesis so far (it may still change)."""

    text: str


@dataclass(frozen=True, slots=True)
class SttCommitted:
    """Audio up to `through_ms` (of the attempt's audio) is final and reads `text`."""

    text: str
    through_ms: int


@dataclass(frozen=True, slots=True)
class SttFinal:
    """The attempt's final text for all the audio it was given; always the last item."""

    text: str


SttEvent = SttInterim | SttCommitted | SttFinal


class SegmentAudio:
    """One VAD segment's PCM16 mono audio, written live and read by provider attempts.

    Producer (the pipeline, on the event loop): `append(pcm)`..., then
    `finish(end_ms, audio_end_ms)`. Consumers: `chunks(start)` yields what is
    buffered, then new audio as it comes, and ends at `finish`; `whole(start)`
    waits for `finish` and returns everything from byte `start`. `ended` is an
    Observable that emits `end_ms` once the segment is finished (replayed to
    late subscribers) and is how Rx code waits for the end.
    """

    def __init__(
        self, segment_id: int, start_ms: int, audio_start_ms: int, sample_rate: int
    ) -> None:
        self.segment_id = segment_id
        self.start_ms = start_ms
        self.audio_start_ms = audio_start_ms
        self.sample_rate = sample_rate
        self.end_ms: int | None = None
        self.audio_end_ms: int | None = None
        self.finished_at: float | None = None
        self._buffer = bytearray()
        self._finished = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self._waiting = 0  # readers waiting on `_changed`
        self._settled = asyncio.Event()  # set at `finish` or `abort`, for `whole`
        self._end: AsyncSubject[int] = AsyncSubject()

    @property
    def finished(self) -> bool:
        """True once `finish` was called."""
        return self._finished

    @property
    def error(self) -> BaseException | None:
        """The reason the audio will never be complete (see `abort`), if any."""
        return self._error

    @property
    def size(self) -> int:
        """Bytes buffered so far."""
        return len(self._buffer)

    @property
    def ended(self) -> Observable[int]:
        """Emits `end_ms` and completes when the segment is finished (replays)."""
        return self._end

    def received_ms(self) -> int:
        """Milliseconds of audio buffered so far (from `audio_start_ms`)."""
        return len(self._buffer) // 2 * 1000 // self.sample_rate

    def append(self, pcm: bytes) -> None:
        """Add audio (PCM16 mono at `sample_rate`); wakes waiting readers."""
        if self._finished or not pcm:
            return
        self._buffer += pcm
        self._wake()

    def finish(self, end_ms: int, audio_end_ms: int, at: float | None = None) -> None:
        """No more audio: speech ended at `end_ms`, the audio at `audio_end_ms`.

        `at` (seconds on the caller's clock) records when the end became known.
        """
        if self._finished:
            return
        self._finished = True
        self.finished_at = at
        self.end_ms = end_ms
        self.audio_end_ms = audio_end_ms
        self._settled.set()
        self._wake()
        self._end.on_next(end_ms)
        self._end.on_completed()

    def abort(self, error: BaseException) -> None:
        """The audio will never be complete: readers raise `error`."""
        if not self._finished:
            self._error = error
            self._settled.set()
            self._wake()

    def read(self, start: int = 0) -> bytes:
        """The bytes buffered from offset `start` (a copy)."""
        with memoryview(self._buffer) as view, view[start:] as tail:
            return bytes(tail)

    async def chunks(self, start: int = 0) -> AsyncIterator[bytes]:
        """Buffered audio from byte `start`, then new audio as it is appended, until finished.

        Each item is everything that was available at that moment (never empty).
        """
        pos = start
        while True:
            if self._error is not None:
                raise self._error
            if len(self._buffer) > pos:
                data = bytes(self._buffer[pos:])
                pos += len(data)
                yield data
                continue
            if self._finished:
                return
            await self._wait()

    async def whole(self, start: int = 0) -> bytes:
        """Wait for the end of the segment; all its audio from byte `start`.

        It sleeps until `finish` or `abort`, not woken by every `append` (a
        segment's frames arrive every 20 ms while it waits)."""
        while not self._finished:
            if self._error is not None:
                raise self._error
            await self._settled.wait()
        return self.read(start)

    async def wait_change(self) -> None:
        """Return at the next `append`, `finish` or `abort`."""
        await self._wait()

    async def _wait(self) -> None:
        self._waiting += 1
        try:
            await self._changed.wait()
        finally:
            self._waiting -= 1

    def _wake(self) -> None:
        if not self._waiting:
            return  # nobody waits: the unset event stays good for the next reader
        changed = self._changed
        self._changed = asyncio.Event()
        changed.set()


@dataclass(frozen=True, slots=True)
class SttRequest:
    """One attempt's input: the segment's audio from `offset_ms`, at `sample_rate`.

    `chunks()` / `whole()` read the segment (resampled when the provider asked
    for a rate other than the segment's). `language` is a BCP-47 tag or None
    (let the provider decide); `interim_results` says whether the client wants
    interim transcripts.
    """

    audio: SegmentAudio
    offset_ms: int = 0
    language: str | None = None
    interim_results: bool = False
    sample_rate: int = 16000

    @property
    def start_byte(self) -> int:
        """Where this attempt's audio starts in the segment buffer."""
        return self.offset_ms * self.audio.sample_rate // 1000 * 2

    async def chunks(self) -> AsyncIterator[bytes]:
        """The attempt's audio, live, as PCM16 at `sample_rate`."""
        source_rate = self.audio.sample_rate
        if source_rate == self.sample_rate:
            async for chunk in self.audio.chunks(self.start_byte):
                yield chunk
            return
        resampler = Resampler(source_rate, self.sample_rate)
        async for chunk in self.audio.chunks(self.start_byte):
            out = resampler.process(np.frombuffer(chunk, dtype="<i2"))
            if out.size:
                yield out.astype("<i2", copy=False).tobytes()
        tail = resampler.flush()
        if tail.size:
            yield tail.astype("<i2", copy=False).tobytes()

    async def whole(self) -> bytes:
        """All of the attempt's audio (waits for the segment end), at `sample_rate`."""
        pcm = await self.audio.whole(self.start_byte)
        if self.audio.sample_rate == self.sample_rate:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        out = resample(samples, self.audio.sample_rate, self.sample_rate)
        return out.astype("<i2", copy=False).tobytes()


class LiveReader:
    """Reads one attempt's audio piece by piece, with a timeout (for keep-alives).

    `await next(wait_seconds)` returns the bytes that arrived since the last
    call (resampled to the request's rate), `b""` when nothing came within
    `wait_seconds`, and None once the segment is finished and everything was read.
    """

    def __init__(self, request: SttRequest) -> None:
        self._audio = request.audio
        self._pos = request.start_byte
        self._resampler = (
            None
            if request.sample_rate == request.audio.sample_rate
            else Resampler(request.audio.sample_rate, request.sample_rate)
        )
        self._done = False

    def _convert(self, pcm: bytes) -> bytes:
        if self._resampler is None:
            return pcm
        out = self._resampler.process(np.frombuffer(pcm, dtype="<i2"))
        return out.astype("<i2", copy=False).tobytes()

    async def next(self, wait_seconds: float) -> bytes | None:
        """New audio, b"" after `wait_seconds` without any, or None at the end."""
        if self._done:
            return None
        audio = self._audio
        if audio.size <= self._pos and not audio.finished:
            try:
                async with asyncio.timeout(wait_seconds):
                    while audio.size <= self._pos and not audio.finished:
                        if audio.error is not None:
                            raise audio.error
                        await audio.wait_change()
            except TimeoutError:
                return b""
        if audio.size > self._pos:
            data = audio.read(self._pos)
            self._pos += len(data)
            return self._convert(data)
        self._done = True
        if self._resampler is not None:
            tail = self._resampler.flush()
            if tail.size:
                return tail.astype("<i2", copy=False).tobytes()
        return None


class SttProvider(Protocol):
    """A speech-to-text adapter for one configured model.

    `transcribe` yields `SttEvent`s ending with one `SttFinal`; it raises
    `ProviderError` on failure, and when the consumer stops iterating it stops
    its work (closes sockets, cancels queued decodes). `sample_rate` is the rate
    it wants its PCM16 mono audio at.
    """

    provider_id: str
    model_name: str
    sample_rate: int

    def transcribe(self, request: SttRequest) -> AsyncIterator[SttEvent]:
        """The segment's transcripts: interim/committed pieces, then one final."""
        ...

    def describe(self) -> dict[str, Any]:
        """Secret-free facts for the router listing (engine, model, rate)."""
        ...

    async def aclose(self) -> None:
        """Release what the adapter holds (worker threads, connections)."""
        ...
