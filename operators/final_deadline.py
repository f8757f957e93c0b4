"""Deadlines for a transcription attempt, counted from the end of its segment.

A speech-to-text attempt may start while the person is still speaking (a
streaming provider hears the audio live), so its deadlines cannot run from
subscription: the time it legitimately waits is as long as the speech. What
counts is how long after the segment ended the final transcript takes
(DESIGN: "final transcript after segment end"), and the gaps between results
once the audio is complete. A missed deadline errors with
`ProviderError(TIMEOUT)` and disposes the attempt (closing its provider call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable

from operators.scheduling import require_scheduler
from providers.types import ErrorCategory, ProviderError

T = TypeVar("T")


def final_deadline(
    ended: Observable[Any],
    final_within: float,
    idle: float,
    is_final: Callable[[T], bool],
    *,
    what: str = "final transcript",
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Fail the attempt when its final item is late, counting from when `ended` emits.

    Before `ended` emits, items pass with no deadline. From then on: the final
    item (`is_final`) must come within `final_within` seconds, and no gap
    between items may exceed `idle` seconds. `ended` may already have emitted
    (a replaying source) when the attempt starts. final_within=3, idle=2:
    ended:  -----e
    source: -i-i------i----f|
    result: -i-i---#             (# at e+2: "no final transcript for 2s")
    source: -i-i---i-i-i-i-
    result: -i-i---i#            (# at e+3: "no final transcript within 3s ...")
    source: -i-i---f|
    result: -i-i---f|
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            sched = require_scheduler(scheduler, scheduler_, "final_deadline")
            final_timer = SerialDisposable()
            gap_timer = SerialDisposable()
            upstream = SerialDisposable()
            end_watch = SerialDisposable()
            state = {"done": False, "armed": False, "final": False}

            def fail(message: str) -> None:
                if state["done"]:
                    return
                state["done"] = True
                upstream.dispose()
                end_watch.dispose()
                observer.on_error(ProviderError(ErrorCategory.TIMEOUT, message))

            def timer(seconds: float, message: str) -> abc.DisposableBase:
                def fire(_: abc.SchedulerBase, __: Any = None) -> None:
                    fail(message)

                return sched.schedule_relative(seconds, fire)

            def arm_gap() -> None:
                gap_timer.disposable = timer(idle, f"no {what} for {idle:g}s")

            def on_end(_: Any) -> None:
                if state["armed"] or state["done"] or state["final"]:
                    return
                state["armed"] = True
                final_timer.disposable = timer(
                    final_within, f"no {what} within {final_within:g}s of the segment end"
                )
                arm_gap()

            def on_next(value: T) -> None:
                if state["done"]:
                    return
                if is_final(value):
                    state["final"] = True
                    final_timer.dispose()
                    gap_timer.dispose()
                elif state["armed"]:
                    arm_gap()
                observer.on_next(value)

            def on_error(error: Exception) -> None:
                if not state["done"]:
                    state["done"] = True
                    end_watch.dispose()
                    observer.on_error(error)

            def on_completed() -> None:
                if not state["done"]:
                    state["done"] = True
                    end_watch.dispose()
                    observer.on_completed()

            end_watch.disposable = ended.subscribe(on_end, scheduler=scheduler_)
            upstream.disposable = source.subscribe(
                on_next, on_error, on_completed, scheduler=scheduler_
            )
            return CompositeDisposable(upstream, final_timer, gap_timer, end_watch)

        return Observable(subscribe)

    return operator
