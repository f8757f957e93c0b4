"""Pieces every endpoint pipeline shares: admission, cancel, the terminal rule.

`request_frames` wraps one request's answer so that `cancel` ends it (disposing
the provider call) and the stream ends with exactly one terminal frame;
`Admission` decides which new requests a socket accepts and how rejected
frames are answered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from reactivex import Observable

from observability.telemetry import RequestTelemetry
from operators.request_scope import request_scope
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.messages import CANCEL, BadMessage, ClientMessage
from protocol.validation import describe_validation_error as describe_validation_error
from resume.takeover import Resumed

log = logging.getLogger("sluice.requests")

T = TypeVar("T")

CANCELLED = "cancelled"


def request_frames(
    frames: FrameFactory,
    answer_for: Callable[[Observable[ClientMessage]], Observable[Any]],
    later: Observable[ClientMessage],
    error_frame: Callable[[Exception], Frame],
    *,
    input_frame: Callable[[ClientMessage], Frame] | None = None,
    to_frame: Callable[[Any], Frame] | None = None,
) -> Observable[Frame]:
    """One request's frames, ending with exactly one terminal frame.

    later:   ---i----c      (i: further input, c: cancel)
    answer:  -a---b--       (answer_for(inputs), disposed at c)
    result:  -a---b--C|     (C: error `cancelled`, finish_reason cancelled)
    An answer that errors ends with `error_frame(error)`. With `input_frame`,
    further input is answered with that frame instead of reaching the answer;
    with `to_frame`, the answer's events become frames (see `operators.request_scope`).
    """

    def cancelled(_msg: ClientMessage) -> Frame:
        return frames.error(CANCELLED, "cancelled by the client", finish_reason="cancelled")

    def incomplete() -> Frame:
        return frames.error(ErrorName.UNKNOWN_ERROR, "the answer ended without a finish_reason")

    return request_scope(
        answer_for,
        later,
        is_cancel=_is_cancel,
        cancelled_frame=cancelled,
        error_frame=error_frame,
        incomplete_frame=incomplete,
        input_frame=input_frame,
        to_frame=to_frame,
    )


def _is_cancel(msg: ClientMessage) -> bool:
    return msg.type == CANCEL


def _no_telemetry(_request_id: str) -> RequestTelemetry | None:
    return None


def _not_resumed(_request_id: str) -> Resumed | None:
    return None


@dataclass
class Admission:
    """Which new requests one socket accepts, and the frames that say no.

    `accepting()` turns False while the server drains; `on_active_change`
    hears the socket's count of requests in flight. Optional limits:
    `rate_limit()` spends one token of the caller's request rate (None: go on,
    else the seconds until a token is back); `max_metadata_bytes` bounds the
    `metadata` a request echoes on every frame. `request_telemetry(request_id)`
    gives an admitted request's telemetry (for `instrument_attempt`), `key_id`
    names the caller's API key. `router_present()` turns False once a config
    reload removed the socket's router: new requests get `router_not_found`.
    `resumed(request_id)` is the answer so far of a request this socket took over
    from a gone instance (docs/resume.md), else None.
    """

    max_requests: int
    accepting: Callable[[], bool] = field(default=lambda: True)
    on_active_change: Callable[[Mapping[str, ClientMessage]], None] | None = None
    rate_limit: Callable[[], float | None] | None = None
    max_metadata_bytes: int | None = None
    request_telemetry: Callable[[str], RequestTelemetry | None] = _no_telemetry
    key_id: str | None = None
    router_present: Callable[[], bool] = field(default=lambda: True)
    resumed: Callable[[str], Resumed | None] = _not_resumed

    def admit_frame(
        self, router_id: str, clock: Callable[[], float]
    ) -> Callable[[ClientMessage, int], Frame | None]:
        """(first message, requests in flight) -> a refusal frame, or None to admit.

        Checked in order: shutting down, router removed by a reload, requests per
        socket, metadata size, the key's request rate (a refused request spends no
        token).
        """

        def admit(msg: ClientMessage, active: int) -> Frame | None:
            frames = FrameFactory(msg.request_id, router_id, msg.metadata, clock)
            if not self.accepting():
                return frames.error(
                    ErrorName.SHUTTING_DOWN,
                    "this instance is shutting down; reconnect and send the request again",
                )
            if not self.router_present():
                return frames.error(
                    ErrorName.ROUTER_NOT_FOUND,
                    f"router {router_id!r} was removed by a config reload; "
                    "requests already running on this socket finish",
                )
            if active >= self.max_requests:
                return frames.error(
                    ErrorName.TOO_MANY_REQUESTS,
                    f"this socket already has {active} requests in flight "
                    f"(limit {self.max_requests})",
                    limit="max_requests_per_socket",
                )
            if self.max_metadata_bytes is not None and msg.metadata:
                size = len(json.dumps(msg.metadata, separators=(",", ":"), ensure_ascii=False))
                if size > self.max_metadata_bytes:
                    return FrameFactory(msg.request_id, router_id, None, clock).error(
                        ErrorName.METADATA_TOO_LARGE,
                        f"metadata is {size} bytes of JSON; the limit is "
                        f"{self.max_metadata_bytes} (it is echoed on every frame)",
                        limit="max_metadata_bytes",
                    )
            if self.rate_limit is not None:
                wait = self.rate_limit()
                if wait is not None:
                    return frames.error(
                        ErrorName.RATE_LIMITED,
                        f"this API key's request rate is used up; retry in {wait:.3f} s",
                        limit="rate_limit",
                        retry_after=round(wait, 3),
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
