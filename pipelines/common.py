"""Pieces every endpoint pipeline shares: admission, cancel, the terminal rule.

`request_frames` wraps one request's answer so that `cancel` ends it (disposing
the provider call) and the stream ends with exactly one terminal frame;
`Admission` decides which new requests a socket accepts and how rejected
frames are answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import reactivex
from pydantic import ValidationError
from reactivex import Observable
from reactivex import operators as ops

from operators.terminal import terminal_rule
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.messages import CANCEL, BadMessage, ClientMessage

log = logging.getLogger("sluice.requests")

CANCELLED = "cancelled"


def describe_validation_error(error: ValidationError) -> str:
    """A short, value-free description of what is wrong with a request body."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "invalid request: " + "; ".join(parts)


def request_frames(
    frames: FrameFactory,
    answer_for: Callable[[Observable[ClientMessage]], Observable[Frame]],
    later: Observable[ClientMessage],
    error_frame: Callable[[Exception], Frame],
) -> Observable[Frame]:
    """One request's frames, ending with exactly one terminal frame.

    later:   ---i----c      (i: further input, c: cancel)
    answer:  -a---b--       (answer_for(inputs), disposed at c)
    result:  -a---b--C|     (C: error `cancelled`, finish_reason cancelled)
    An answer that errors ends with `error_frame(error)`.
    """

    def is_cancel(msg: ClientMessage) -> bool:
        return msg.type == CANCEL

    def is_input(msg: ClientMessage) -> bool:
        return msg.type != CANCEL

    cancels = later.pipe(ops.filter(is_cancel), ops.take(1))
    inputs = later.pipe(ops.filter(is_input))
    answer = answer_for(inputs).pipe(ops.take_until(cancels))
    cancelled = cancels.pipe(
        ops.map(
            lambda _: frames.error(CANCELLED, "cancelled by the client", finish_reason="cancelled")
        )
    )
    return reactivex.merge(answer, cancelled).pipe(
        terminal_rule(
            error_frame,
            lambda: frames.error(
                ErrorName.UNKNOWN_ERROR, "the answer ended without a finish_reason"
            ),
        )
    )


@dataclass
class Admission:
    """Which new requests one socket accepts, and the frames that say no.

    `accepting()` turns False while the server drains; `on_active_change`
    hears the socket's count of requests in flight.
    """

    max_requests: int
    accepting: Callable[[], bool] = field(default=lambda: True)
    on_active_change: Callable[[Mapping[str, ClientMessage]], None] | None = None

    def admit_frame(
        self, router_id: str, clock: Callable[[], float]
    ) -> Callable[[ClientMessage, int], Frame | None]:
        """(first message, requests in flight) -> a refusal frame, or None to admit."""

        def admit(msg: ClientMessage, active: int) -> Frame | None:
            frames = FrameFactory(msg.request_id, router_id, msg.metadata, clock)
            if not self.accepting():
                return frames.error(
                    ErrorName.SHUTTING_DOWN,
                    "this instance is shutting down; reconnect and send the request again",
                )
            if active >= self.max_requests:
                return frames.error(
                    ErrorName.TOO_MANY_REQUESTS,
                    f"this socket already has {active} requests in flight "
                    f"(limit {self.max_requests})",
                )
            return None

        return admit

    def bad_message_frame(
        self, router_id: str, clock: Callable[[], float]
    ) -> Callable[[BadMessage, bool], Frame]:
        """A rejected frame -> its error (terminal only for a request not in flight)."""

        def reject(msg: BadMessage, is_active: bool) -> Frame:
            frames = FrameFactory(msg.request_id, router_id, None, clock)
            if is_active or msg.request_id is None:
                return frames.error(msg.name, msg.message, finish_reason=None)
            return frames.error(msg.name, msg.message)

        return reject

    def crashed_frame(
        self, router_id: str, clock: Callable[[], float]
    ) -> Callable[[str, Exception], Frame]:
        """A pipeline bug -> a terminal `unknown_error` (and a log line with the stack)."""

        def crashed(request_id: str, error: Exception) -> Frame:
            log.error(
                "request pipeline crashed",
                exc_info=error,
                extra={"request_id": request_id, "router": router_id},
            )
            frames = FrameFactory(request_id, router_id, None, clock)
            return frames.error(ErrorName.UNKNOWN_ERROR, f"internal error: {type(error).__name__}")

        return crashed
