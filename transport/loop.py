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
