"""Uncaught errors to the JSON log.

`log_crashes()` routes uncaught exceptions of the main thread and other threads to
the `sluice.crash` logger (through the redacting formatter);
`log_loop_exception` is the event loop's handler for the same.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from types import TracebackType
from typing import Any

log = logging.getLogger("sluice.server")


def log_crashes() -> None:
    """Uncaught exceptions (main thread, threads, the event loop) go to the JSON log,
    through the redacting formatter, instead of a raw traceback on stderr."""
    crash_log = logging.getLogger("sluice.crash")

    def excepthook(
        kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        crash_log.critical("uncaught exception", exc_info=(kind, error, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            crash_log.critical(
                "uncaught exception in a thread",
                exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
                extra={"thread_name": args.thread.name if args.thread else None},
            )

    sys.excepthook = excepthook
    threading.excepthook = thread_hook


def log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: its context in; one `sluice.crash` log line out."""
    error = context.get("exception")
    logging.getLogger("sluice.crash").error(
        str(context.get("message", "unhandled error in the event loop")),
        exc_info=error if isinstance(error, BaseException) else None,
    )
