"""Speech in: PCM in, VAD boundaries and transcripts out, with the listen router's failover.

    pcm (16 kHz mono) ─► vad_segments ─┬─► SpeechStarted / SpeechEnded (at once)
                                       └─► live_segments ─► ListenRouter.transcribe
                                           per segment ─► concat_eager (in order)
                                           ─► Transcribed

`hear(router, settings, language, interim)` is the whole of it as one operator:
what the listen endpoint runs between its audio intake and its frames, and what
a conversation runs between the user's microphone and the chat router.
Transcription of a segment starts as soon as it begins; transcripts come in
segment order; a segment's `speech_started` of a later segment may come before
an earlier segment's final.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reactivex import Observable
from reactivex import operators as ops

from observability.telemetry import RequestTelemetry
from operators.audio_intake import PIPELINE_RATE
from operators.failover import Reset
from operators.live_segments import live_segments
from operators.ordered import concat_eager, merge_now
from operators.vad import (
    Classifier,
    SpeechEnded,
    SpeechStarted,
    VadEvent,
    VadSettings,
    vad_segments,
)
from pipelines.listen_router import ListenRouter, SegmentTranscript
from providers.stt_types import SegmentAudio


@dataclass(frozen=True, slots=True)
class Transcribed:
    """A transcript of segment `segment_id` (or the `Reset` of a model that failed in it)."""

    segment_id: int
    item: SegmentTranscript | Reset


Heard = SpeechStarted | SpeechEnded | Transcribed
"""What `hear` emits: VAD boundaries as they are decided, transcripts in segment order."""


def _is_boundary(event: VadEvent) -> bool:
    return isinstance(event, SpeechStarted | SpeechEnded)


def _as_boundary(event: VadEvent) -> Heard:
    assert isinstance(event, SpeechStarted | SpeechEnded)
    return event


def hear(
    router: ListenRouter,
    settings: VadSettings,
    language: str | None,
    interim: bool,
    telemetry: RequestTelemetry | None = None,
    clock: Callable[[], float] | None = None,
    classify: Classifier | None = None,
) -> Callable[[Observable[bytes]], Observable[Heard]]:
    """PCM16 mono at `PIPELINE_RATE` in; VAD boundaries and transcripts out.

    pcm:    -a-a-a-a-a-a-a-|
    result: ---S-----E--T(final)-|     (S/E: SpeechStarted/Ended, T: Transcribed)
    `clock` stamps each segment's end; with `telemetry`, the time from there to
    its final transcript is observed (`time_to_final_transcript`). An error of a
    segment's transcription (all models unavailable) ends the stream.
    `classify` replaces webrtcvad (tests).
    """
    metrics = telemetry.telemetry.metrics if telemetry is not None else None

    def transcribed(segment: SegmentAudio) -> Observable[Heard]:
        def wrap(item: SegmentTranscript | Reset) -> Heard:
            if (
                metrics is not None
                and telemetry is not None
                and clock is not None
                and isinstance(item, SegmentTranscript)
                and item.is_final
                and segment.finished_at is not None
            ):
                labels = telemetry.labels(item.model.model_id, item.model.provider_id)
                waited = max(0.0, clock() - segment.finished_at)
                metrics.time_to_final_transcript.labels(*labels).observe(waited)
            return Transcribed(segment.segment_id, item)

        return router.transcribe(segment, language, interim, telemetry).pipe(ops.map(wrap))

    def split(events: Observable[VadEvent]) -> Observable[Heard]:
        boundaries = events.pipe(ops.filter(_is_boundary), ops.map(_as_boundary))
        transcripts = events.pipe(
            live_segments(PIPELINE_RATE, clock), ops.map(transcribed), concat_eager()
        )
        return merge_now(boundaries, transcripts)

    def operator(pcm: Observable[bytes]) -> Observable[Heard]:
        return pcm.pipe(
            vad_segments(settings, PIPELINE_RATE, classify=classify), ops.publish(split)
        )

    return operator
