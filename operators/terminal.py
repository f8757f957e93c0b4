"""The terminal rule: every request ends with exactly one terminal frame.

Whatever happens upstream (a terminal frame, an error, a silent completion), the
request's frame stream ends with exactly one frame marked `terminal`, and nothing
follows it: at the terminal frame the upstream is disposed.
"""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc
from reactivex.disposable import SerialDisposable

from protocol.frames import Frame


def terminal_rule(
    error_frame: Callable[[Exception], Frame], incomplete_frame: Callable[[], Frame]
) -> Callable[[Observable[Frame]], Observable[Frame]]:
    """Frames in, frames out, ending at exactly one terminal frame.

    source: -a-b-T-c|   result: -a-b-T|     (c never leaves)
    source: -a-#        result: -a-E|       (E = error_frame(error), terminal)
    source: -a-|        result: -a-I|       (I = incomplete_frame(), terminal)
    `error_frame` and `incomplete_frame` must return terminal frames.
    """

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(
            observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            upstream = SerialDisposable()
            state = {"ended": False}

            def finish(frame: Frame) -> None:
                state["ended"] = True
                upstream.dispose()
                observer.on_next(frame)
                observer.on_completed()

            def on_next(frame: Frame) -> None:
                if state["ended"]:
                    return
                if frame.terminal:
                    finish(frame)
                else:
                    observer.on_next(frame)

            def on_error(error: Exception) -> None:
                if not state["ended"]:
                    finish(error_frame(error))

            def on_completed() -> None:
                if not state["ended"]:
                    finish(incomplete_frame())

            upstream.disposable = source.subscribe(
                on_next, on_error, on_completed, scheduler=scheduler
            )
            return upstream

        return Observable(subscribe)

    return operator
