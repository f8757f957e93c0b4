"""`resample_chunks`: a provider's PCM chunks in, int16 samples at the client's rate out."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc

from audio.resample import Resampler
from providers.tts_types import Int16Array, PcmChunk


def resample_chunks(
    to_rate: int,
) -> Callable[[Observable[PcmChunk]], Observable[Int16Array]]:
    """PCM chunks at the provider's rate in, int16 samples at `to_rate` out.

    chunks: -a(22050)-b(22050)-|
    result: -a'-------b'-------t|    (t: the filter's tail, flushed at completion)
    Empty outputs are skipped; a change of input rate flushes and starts over.
    Errors pass through (the tail is dropped).
    """

    def operator(source: Observable[PcmChunk]) -> Observable[Int16Array]:
        def subscribe(
            observer: abc.ObserverBase[Int16Array], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            state: dict[str, Resampler | None] = {"resampler": None}

            def emit(samples: Int16Array) -> None:
                if samples.size:
                    observer.on_next(samples)

            def on_next(chunk: PcmChunk) -> None:
                current = state["resampler"]
                if current is None or current.from_rate != chunk.sample_rate:
                    if current is not None:
                        emit(current.flush())
                    current = Resampler(chunk.sample_rate, to_rate)
                    state["resampler"] = current
                emit(current.process(chunk.samples))

            def on_completed() -> None:
                current = state["resampler"]
                if current is not None:
                    emit(current.flush())
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator
