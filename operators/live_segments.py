"""`live_segments`: VAD events in, one `SegmentAudio` per utterance out, filled as speech arrives.

A segment is emitted at its `SpeechStarted` (so transcription can start while the
user still speaks), appended to with each `SpeechAudio` and finished at its
`SpeechEnded`; providers read it while it grows (`providers.stt_types`).
"""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc

from operators.vad import SpeechAudio, SpeechStarted, VadEvent
from providers.stt_types import SegmentAudio


def live_segments(
    sample_rate: int, clock: Callable[[], float] | None = None
) -> Callable[[Observable[VadEvent]], Observable[SegmentAudio]]:
    """VAD events in; a `SegmentAudio` per utterance out, filled live as events arrive.

    `clock` stamps each segment's `finished_at` (when its end was known).

    events: -S-a-a-E-S-a-E-|
    result: -G-------H-----|   (G is appended a, a and finished at E)
    When the events error, an open segment is aborted with that error.
    """

    def operator(source: Observable[VadEvent]) -> Observable[SegmentAudio]:
        def subscribe(
            observer: abc.ObserverBase[SegmentAudio], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            current: list[SegmentAudio] = []

            def on_next(event: VadEvent) -> None:
                if isinstance(event, SpeechStarted):
                    segment = SegmentAudio(
                        event.segment_id, event.start_ms, event.audio_start_ms, sample_rate
                    )
                    current[:] = [segment]
                    observer.on_next(segment)
                elif isinstance(event, SpeechAudio):
                    if current:
                        current[0].append(event.pcm)
                elif current:
                    at = clock() if clock is not None else None
                    current.pop().finish(event.end_ms, event.audio_end_ms, at=at)

            def on_error(error: Exception) -> None:
                if current:
                    current.pop().abort(error)
                observer.on_error(error)

            return source.subscribe(on_next, on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator
