"""`paced`: subscribe to a source only after a wait computed at subscription time."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops

from operators.scheduling import defer_scheduled

T = TypeVar("T")


def paced(
    wait: Callable[[], float], scheduler: abc.SchedulerBase | None = None
) -> Callable[[Observable[T]], Observable[T]]:
    """The source, subscribed `wait()` seconds after the result is (at once when <= 0).

    wait() = 3
    source:    -a-b-|        (cold; its clock starts when it is subscribed)
    result: ------a-b-|
    `wait` is asked at each subscription (speak: how far audio runs ahead of
    real time). Errors pass through; disposing during the wait cancels it.
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def start(sched: abc.SchedulerBase) -> Observable[T]:
            seconds = wait()
            if seconds <= 0:
                return source
            return reactivex.timer(seconds, scheduler=sched).pipe(ops.flat_map(lambda _: source))

        return defer_scheduled(start, scheduler, "paced")

    return operator
