"""Scheduler plumbing shared by the time-based operators."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable

T = TypeVar("T")


def require_scheduler(
    explicit: abc.SchedulerBase | None, inherited: abc.SchedulerBase | None, operator: str
) -> abc.SchedulerBase:
    """The operator's own scheduler, else the subscription's; never a hidden default.

    Rx would fall back to a background-thread timer, which breaks asyncio code and
    virtual-time tests alike, so a missing scheduler is a programming error.
    """
    scheduler = explicit or inherited
    if scheduler is None:
        raise ValueError(f"{operator} needs a scheduler: pass one or subscribe with scheduler=")
    return scheduler


def seconds(scheduler: abc.SchedulerBase) -> float:
    """The scheduler's clock as float seconds (virtual under a TestScheduler).

    A scheduler with a `unix_seconds()` method (the app's `transport.loop.LoopScheduler`)
    answers from it directly: read per chunk, `now` would build a datetime each time.
    """
    fast = getattr(scheduler, "unix_seconds", None)
    if fast is not None:
        return float(fast())
    return scheduler.to_seconds(scheduler.now)


def defer_scheduled(
    factory: Callable[[abc.SchedulerBase], Observable[T]],
    scheduler: abc.SchedulerBase | None = None,
    operator: str = "defer_scheduled",
) -> Observable[T]:
    """Like `reactivex.defer`, but the factory gets the real scheduler (never a default).

    Each subscription calls `factory(scheduler)` and subscribes to what it returns.
    """

    def subscribe(
        observer: abc.ObserverBase[T], scheduler_: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        sched = require_scheduler(scheduler, scheduler_, operator)
        try:
            source = factory(sched)
        except Exception as error:
            observer.on_error(error)
            return Disposable()
        return source.subscribe(observer, scheduler=scheduler_ or sched)

    return Observable(subscribe)


class Once(abc.DisposableBase):
    """A disposable that runs `action` on its first `dispose()` (later calls do nothing).

    Rx's `Disposable` makes a re-entrant lock per instance for threads this app does
    not have; the operators on the request path make one of these per subscription.
    """

    __slots__ = ("_action",)

    def __init__(self, action: Callable[[], object] | None = None) -> None:
        self._action = action

    def dispose(self) -> None:
        """Run the action once."""
        action, self._action = self._action, None
        if action is not None:
            action()
