"""Voice activity detection as an Rx operator: PCM in, speech segments out.

`vad_segments(settings, sample_rate)` turns mono PCM16 bytes (chunks of any
size) into segment events; `whole_segments()` folds those events into one
`Segment` (pre-roll + speech + the silence that confirmed its end) per utterance.

Timing follows the audio, never the clock: the input is cut into frames of
exactly `frame_ms` (`audio.reframe.Reframer`), frame `i` covers
`[i * frame_ms, (i + 1) * frame_ms)` ms of the stream, and every time below is
derived from that count, so known audio gives exact boundaries in tests.

- A segment starts when `min_speech` of consecutive voiced frames is seen; its
  `start_ms` is the start of the first of them (the onset). Its audio starts
  `preroll` earlier (never before the stream start or the previous segment's
  audio end), because the onset of speech is what the VAD misses most.
- End of speech is the last sample of the last voiced frame that is above the
  silence floor (`SILENCE_FLOOR`, -60 dBFS), so a voiced frame that holds only a
  few ms of speech ends where the speech does, not at its frame's end. The
  segment ends with the first frame that completes `hangover` of audio after that
  sample (counted in samples, so the turn ends `hangover_ms` after the speech,
  plus only the wait for the frame that holds that instant) with no voiced frame
  since; `end_ms` is that end of speech, `audio_end_ms` the end of the frame that
  confirmed it. It is cut at `max_segment` of audio; if
  speech goes on, the next segment starts right at the cut (its pre-roll is
  clamped to the cut, so no sample is lost or sent twice).
- At the end of the input an open segment ends at the last voiced frame; its
  audio includes the final partial frame. A voiced run shorter than
  `min_speech` at the end is not speech.

The default classifier is webrtcvad gated by the silence floor: a frame whose
every sample is within +-`SILENCE_FLOOR` is not speech, whatever webrtcvad says.
webrtcvad smooths its decisions with a built-in hangover of its own (3-5 frames
of 20 ms in mode 2) that keeps frames after speech "voiced" even when they are
digital silence; without the gate that hangover would add 40-100 ms to every end
of turn on quiet input (a noise-suppressed browser microphone, synthesized
speech). On noisy input above the floor webrtcvad's own hangover remains.

Events, in stream order: `SpeechStarted`, `SpeechAudio`* (the pre-roll first,
then each frame), `SpeechEnded`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import webrtcvad
from pydantic import ValidationError
from reactivex import Observable, abc

from audio.reframe import Reframer, frame_bytes_for
from config.models import VADConfig

VAD_RATES: tuple[int, ...] = (8000, 16000, 32000, 48000)
"""Sample rates webrtcvad classifies."""

SILENCE_FLOOR = 32
"""Peak PCM16 amplitude (-60 dBFS) at or below which a sample is silence: frames
entirely within it are never speech, and end of speech is the last sample above it."""


@dataclass(frozen=True, slots=True)
class VadSettings:
    """VAD settings in whole milliseconds (what the operator uses)."""

    mode: int = 2
    frame_ms: int = 20
    hangover_ms: int = 300
    preroll_ms: int = 300
    min_speech_ms: int = 100
    max_segment_ms: int = 15_000

    @classmethod
    def from_config(cls, config: VADConfig) -> VadSettings:
        """Router config (durations in seconds) -> settings in milliseconds."""
        return cls(
            mode=config.mode,
            frame_ms=config.frame_ms,
            hangover_ms=round(config.hangover * 1000),
            preroll_ms=round(config.preroll * 1000),
            min_speech_ms=round(config.min_speech * 1000),
            max_segment_ms=round(config.max_segment * 1000),
        )

    def frames(self) -> tuple[int, int, int]:
        """(min speech, pre-roll, max segment) in frames (the hangover counts samples)."""
        f = self.frame_ms
        min_speech = max(1, math.ceil(self.min_speech_ms / f))
        preroll = math.ceil(self.preroll_ms / f)
        max_segment = max(min_speech + 1, self.max_segment_ms // f)
        return min_speech, preroll, max_segment


@dataclass(frozen=True, slots=True)
class VadLimits:
    """What a request may override: each duration's allowed range in milliseconds.

    A request can never lengthen `max_segment` beyond its router's (it bounds
    what one provider call receives).
    """

    hangover_ms: tuple[int, int] = (60, 3000)
    preroll_ms: tuple[int, int] = (0, 1000)
    min_speech_ms: tuple[int, int] = (10, 2000)
    max_segment_ms: tuple[int, int] = (1000, 60_000)


class VadOverrideError(ValueError):
    """A request's `vad` object that is invalid or outside `VadLimits`."""


def resolve_vad(
    router: VADConfig, override: dict[str, Any] | None, limits: VadLimits | None = None
) -> VadSettings:
    """The router's VAD settings with a request's overrides applied (within limits).

    `override` uses the config's keys (`mode`, `frame_ms`, `hangover`, `preroll`,
    `min_speech`, `max_segment`; durations as seconds or "300ms"). Raises
    `VadOverrideError` naming the offending key.
    """
    if not override:
        return VadSettings.from_config(router)
    limits = limits or VadLimits()
    try:
        merged = VADConfig.model_validate({**router.model_dump(), **override})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        raise VadOverrideError(f"invalid vad: {problems}") from error
    settings = VadSettings.from_config(merged)
    base = VadSettings.from_config(router)
    for key, (low, high) in (
        ("hangover", limits.hangover_ms),
        ("preroll", limits.preroll_ms),
        ("min_speech", limits.min_speech_ms),
        ("max_segment", limits.max_segment_ms),
    ):
        value = getattr(settings, f"{key}_ms")
        if key in override and not low <= value <= high:
            raise VadOverrideError(f"vad.{key} must be between {low} ms and {high} ms")
    if settings.max_segment_ms > base.max_segment_ms:
        raise VadOverrideError(
            f"vad.max_segment may not exceed the router's {base.max_segment_ms} ms"
        )
    return settings


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began at `start_ms`; the segment's audio starts at `audio_start_ms`."""

    segment_id: int
    start_ms: int
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """PCM16 bytes of an open segment (the pre-roll, then frame by frame)."""

    segment_id: int
    pcm: bytes


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Speech ended at `end_ms` (`cut`: by `max_segment`); audio ends at `audio_end_ms`."""

    segment_id: int
    end_ms: int
    audio_end_ms: int
    cut: bool = False


VadEvent = SpeechStarted | SpeechAudio | SpeechEnded


@dataclass(frozen=True, slots=True)
class Segment:
    """One utterance: speech `[start_ms, end_ms)` and its audio `[audio_start_ms, audio_end_ms)`."""

    segment_id: int
    start_ms: int
    end_ms: int
    audio_start_ms: int
    audio_end_ms: int
    pcm: bytes
    sample_rate: int


Classifier = Callable[[bytes], bool]
"""One frame of PCM16 -> is it speech?"""


def webrtc_classifier(mode: int, sample_rate: int) -> Classifier:
    """webrtcvad at `mode` (0-3) for frames at `sample_rate` (8/16/32/48 kHz), gated
    by the silence floor: a frame no louder than `SILENCE_FLOOR` is not speech.
    webrtcvad still sees every frame, so its noise estimate keeps adapting."""
    if sample_rate not in VAD_RATES:
        raise ValueError(f"webrtcvad takes {VAD_RATES} Hz, not {sample_rate}")
    vad = webrtcvad.Vad(mode)

    def classify(frame: bytes) -> bool:
        voiced = bool(vad.is_speech(frame, sample_rate))
        return voiced and _any_loud(frame)

    return classify


def _any_loud(frame: bytes) -> bool:
    """Whether any sample of the frame is above `SILENCE_FLOOR` (two reductions, no
    copy: the segmenter finds where, once, for the frames that are speech)."""
    samples = np.frombuffer(frame, dtype="<i2")
    return int(samples.max()) > SILENCE_FLOOR or int(samples.min()) < -SILENCE_FLOOR


def _last_loud(frame: bytes) -> int:
    """Index of the frame's last sample above `SILENCE_FLOOR`, or -1 if none is."""
    samples = np.frombuffer(frame, dtype="<i2")
    loud = np.flatnonzero((samples > SILENCE_FLOOR) | (samples < -SILENCE_FLOOR))
    return int(loud[-1]) if loud.size else -1


class _Segmenter:
    """The VAD state machine for one subscription (frames in, events out)."""

    def __init__(self, settings: VadSettings, sample_rate: int, classify: Classifier) -> None:
        self.frame_ms = settings.frame_ms
        self.rate = sample_rate
        self.frame_samples = sample_rate * settings.frame_ms // 1000
        self.hangover = max(1, sample_rate * settings.hangover_ms // 1000)  # samples
        self.min_speech, self.preroll, self.max_segment = settings.frames()
        self.classify = classify
        self.index = 0  # frames seen
        self.history: deque[tuple[int, bytes]] = deque(maxlen=self.preroll + self.min_speech)
        self.run = 0  # consecutive voiced frames while not in a segment
        self.free_from = 0  # first frame not yet given to a segment
        self.segment_id = -1
        self.open = False
        self.audio_start = 0
        self.speech_end = 0  # sample just past the last speech sample of the open segment

    def frame(self, pcm: bytes) -> list[VadEvent]:
        i = self.index
        self.index += 1
        voiced = self.classify(pcm)
        if not self.open:
            self.history.append((i, pcm))
            self.run = self.run + 1 if voiced else 0
            if self.run < self.min_speech:
                return []
            return self._start(i)
        events: list[VadEvent] = [SpeechAudio(self.segment_id, pcm)]
        if voiced:
            self.speech_end = self._speech_end(i, pcm)
        if (i + 1) * self.frame_samples - self.speech_end >= self.hangover:
            events.append(self._end(i + 1, cut=False))
        elif i + 1 - self.audio_start >= self.max_segment:
            events.append(self._end(i + 1, cut=True))
        return events

    def _start(self, i: int) -> list[VadEvent]:
        onset = i - self.run + 1
        first = max(onset - self.preroll, self.free_from)
        pcm = b"".join(frame for index, frame in self.history if index >= first)
        self.speech_end = self._speech_end(i, self.history[-1][1])
        self.history.clear()
        self.run = 0
        self.segment_id += 1
        self.open = True
        self.audio_start = first
        f = self.frame_ms
        return [
            SpeechStarted(self.segment_id, onset * f, first * f),
            SpeechAudio(self.segment_id, pcm),
        ]

    def _speech_end(self, i: int, pcm: bytes) -> int:
        """The sample just past the last speech in voiced frame `i` (its end if none is
        above the floor: a classifier that calls quiet frames speech is believed)."""
        last = _last_loud(pcm)
        offset = last + 1 if last >= 0 else self.frame_samples
        return i * self.frame_samples + offset

    def _end(self, end_frame: int, *, cut: bool, audio_end_ms: int | None = None) -> SpeechEnded:
        self.open = False
        self.free_from = end_frame
        end = end_frame * self.frame_ms if audio_end_ms is None else audio_end_ms
        speech_end_ms = self.speech_end * 1000 // self.rate
        return SpeechEnded(self.segment_id, speech_end_ms, end, cut)

    def finish(self, tail: bytes) -> list[VadEvent]:
        if not self.open:
            return []
        events: list[VadEvent] = []
        if tail:
            events.append(SpeechAudio(self.segment_id, tail))
        total_ms = self.index * self.frame_ms + len(tail) // 2 * 1000 // self.rate
        events.append(self._end(self.index, cut=False, audio_end_ms=total_ms))
        return events


def vad_segments(
    settings: VadSettings,
    sample_rate: int,
    *,
    classify: Classifier | None = None,
) -> Callable[[Observable[bytes]], Observable[VadEvent]]:
    """Mono PCM16 chunks (any sizes) in; speech segment events out.

    20 ms frames, min speech 2 frames, hangover 60 ms, pre-roll 1 frame
    (s: voiced frame, .: silent frame; events at the frame that decides them):
    frames: -.-.-s-s-s-.-.-.-.-|
    events: -----S-a-a-a-a-E---|    S = SpeechStarted(0, start_ms=40, audio_start_ms=20)
                                    (with the pre-roll + first frames as audio),
                                    E = SpeechEnded(0, end_ms=100, audio_end_ms=160)
    Errors pass through. `classify` replaces webrtcvad (tests); the default runs
    webrtcvad at `settings.mode`. Needs no scheduler: time is the sample count.
    """
    frame_bytes = frame_bytes_for(sample_rate, settings.frame_ms)
    if classify is None:
        webrtc_classifier(settings.mode, sample_rate)  # fail early on a bad rate

    def operator(source: Observable[bytes]) -> Observable[VadEvent]:
        def subscribe(
            observer: abc.ObserverBase[VadEvent], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            judge = classify or webrtc_classifier(settings.mode, sample_rate)
            segmenter = _Segmenter(settings, sample_rate, judge)
            reframer = Reframer(frame_bytes)

            def on_next(chunk: bytes) -> None:
                for frame in reframer.push(chunk):
                    for event in segmenter.frame(frame):
                        observer.on_next(event)

            def on_completed() -> None:
                for event in segmenter.finish(reframer.flush()):
                    observer.on_next(event)
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator


def whole_segments(sample_rate: int) -> Callable[[Observable[VadEvent]], Observable[Segment]]:
    """Segment events in; one `Segment` per utterance out, at its `SpeechEnded`.

    events: -S-a-a-E--S-a-E-|
    result: -------G------G-|   (G = Segment with the joined audio)
    """

    def operator(source: Observable[VadEvent]) -> Observable[Segment]:
        def subscribe(
            observer: abc.ObserverBase[Segment], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            parts: list[bytes] = []
            started: list[SpeechStarted] = []

            def on_next(event: VadEvent) -> None:
                if isinstance(event, SpeechStarted):
                    started[:] = [event]
                    parts.clear()
                elif isinstance(event, SpeechAudio):
                    parts.append(event.pcm)
                elif started:
                    start = started[0]
                    observer.on_next(
                        Segment(
                            start.segment_id,
                            start.start_ms,
                            event.end_ms,
                            start.audio_start_ms,
                            event.audio_end_ms,
                            b"".join(parts),
                            sample_rate,
                        )
                    )
                    parts.clear()

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator
