"""Deadlines for one provider attempt: first output, gap between outputs, overall.

A provider that connects but produces nothing is a failure (DESIGN section 3), so
every attempt runs under `deadlines(...)`; a missed deadline errors the stream
with `ProviderError(TIMEOUT)` and disposes the upstream (closing the provider call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable

from operators.scheduling import require_scheduler, seconds
from providers.types import ErrorCategory, ProviderError

T = TypeVar("T")


def deadlines(
    first: float,
    idle: float,
    total: float,
    *,
    what: str = "chunk",
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Fail the stream when a deadline passes (times in seconds, relative).

    first=3, idle=2, total=10:
    source: ---a-b--------c|
    result: ---a-b--#          (# at b+2: "no chunk for 2s")
    source: ----------a|
    result: ---#               (# at 3: "no first chunk within 3s")
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            sched = require_scheduler(scheduler, scheduler_, "deadlines")
            gap_timer = SerialDisposable()
            upstream = SerialDisposable()
            # The gap timer is not re-armed per item (that costs a timer per chunk):
            # when it fires it checks the time of the last item and re-arms for the
            # rest of the gap, so it still fires exactly `idle` after the last item.
            state: dict[str, Any] = {"done": False, "items": 0, "last": 0.0}

            def fail(message: str) -> None:
                if state["done"]:
                    return
                state["done"] = True
                upstream.dispose()
                observer.on_error(ProviderError(ErrorCategory.TIMEOUT, message))

            def check_gap(_: abc.SchedulerBase, __: Any = None) -> None:
                due = state["last"] + idle
                left = due - seconds(sched)
                if left <= 1e-9:
                    fail(f"no {what} for {idle:g}s")
                else:
                    gap_timer.disposable = sched.schedule_relative(left, check_gap)

            def no_first(_: abc.SchedulerBase, __: Any = None) -> None:
                fail(f"no first {what} within {first:g}s")

            def on_next(value: T) -> None:
                if state["done"]:
                    return
                state["last"] = seconds(sched)
                state["items"] += 1
                if state["items"] == 1:
                    gap_timer.disposable = sched.schedule_relative(idle, check_gap)
                observer.on_next(value)

            def on_error(error: Exception) -> None:
                if not state["done"]:
                    state["done"] = True
                    observer.on_error(error)

            def on_completed() -> None:
                if not state["done"]:
                    state["done"] = True
                    observer.on_completed()

            def overall(_: abc.SchedulerBase, __: Any = None) -> None:
                fail(f"attempt exceeded its {total:g}s deadline")

            total_timer = sched.schedule_relative(total, overall)
            gap_timer.disposable = sched.schedule_relative(first, no_first)
            upstream.disposable = source.subscribe(
                on_next, on_error, on_completed, scheduler=scheduler_
            )
            return CompositeDisposable(upstream, gap_timer, total_timer)

        return Observable(subscribe)

    return operator


def require_output(
    counts: Callable[[T], bool],
    *,
    closes: Callable[[T], bool] = lambda _item: False,
    what: str = "output",
) -> Callable[[Observable[T]], Observable[T]]:
    """Fail a stream that ends without any item for which `counts(item)` holds.

    The stream ends at completion or at an item for which `closes(item)` holds
    (e.g. a final chunk); that closing item is withheld when nothing counted.
    source: --x--|   (x does not count)
    result: --x--#   ProviderError(EMPTY_OUTPUT)
    source: --f|     (f closes, nothing counted)
    result: --#
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            seen = {"any": False, "failed": False}
            upstream = SerialDisposable()

            def fail() -> None:
                seen["failed"] = True
                upstream.dispose()
                observer.on_error(
                    ProviderError(ErrorCategory.EMPTY_OUTPUT, f"ended with no {what}")
                )

            def on_next(value: T) -> None:
                if seen["failed"]:
                    return
                if not seen["any"] and counts(value):
                    seen["any"] = True
                if not seen["any"] and closes(value):
                    fail()
                    return
                observer.on_next(value)

            def on_completed() -> None:
                if seen["failed"]:
                    return
                if seen["any"]:
                    observer.on_completed()
                else:
                    fail()

            upstream.disposable = source.subscribe(
                on_next, observer.on_error, on_completed, scheduler=scheduler_
            )
            return upstream

        return Observable(subscribe)

    return operator
