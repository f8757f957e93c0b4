"""Which event loop serves: uvloop where it is installed, the stock asyncio loop otherwise.

uvloop (libuv) roughly halves the loop's and the sockets' own CPU per chunk on
this workload; everything in Sluice is written against plain asyncio, so the
stock loop is a complete fallback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from reactivex import abc, typing
from reactivex.scheduler.eventloop import AsyncIOScheduler

T = TypeVar("T")

log = logging.getLogger("sluice.loop")


def loop_name() -> str:
    """The loop `run` uses: "uvloop" when it is importable, else "asyncio"."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop (uvloop when available)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class LoopScheduler(AsyncIOScheduler):
    """The app's one Rx scheduler on the running loop, with a cheap clock.

    `unix_seconds()` is the same wall clock as `now` (which Rx keeps as a UTC
    datetime) as a float; `operators.scheduling.seconds` uses it, so reading the
    time per chunk costs a `time.time()` call.
    """

    def unix_seconds(self) -> float:
        """Unix seconds now."""
        return time.time()

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[Any],
        state: Any | None = None,
    ) -> abc.DisposableBase:
        """Run `action(self, state)` after `duetime` on the loop; dispose cancels it.

        The same contract as `AsyncIOScheduler.schedule_relative` (a disposable the
        action returns is disposed with the timer), in one small object instead of
        four: every provider attempt arms two deadline timers.
        """
        seconds = self.to_seconds(duetime)
        if seconds <= 0:
            return self.schedule(action, state)
        timer = _Timer()
        timer.handle = self._loop.call_later(seconds, timer.fire, self, action, state)
        return timer


class _Timer(abc.DisposableBase):
    """One `call_later` of `LoopScheduler`; disposing cancels it (or what it returned)."""

    __slots__ = ("handle", "inner")

    def __init__(self) -> None:
        self.handle: asyncio.TimerHandle | None = None
        self.inner: abc.DisposableBase | None = None

    def fire(
        self, scheduler: LoopScheduler, action: typing.ScheduledAction[Any], state: Any
    ) -> None:
        """The timer is due: run the action (unless disposed meanwhile)."""
        if self.handle is None:
            return
        self.handle = None
        result = action(scheduler, state)
        if isinstance(result, abc.DisposableBase):
            self.inner = result

    def dispose(self) -> None:
        """Cancel the timer, or dispose what its action returned."""
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.cancel()
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.dispose()
