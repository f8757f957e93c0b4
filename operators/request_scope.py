"""One request's whole life in one operator: its answer, cancel, input, the terminal rule.

`request_scope(answer_for, later, ...)` replaces a chain of `filter`, `take`,
`take_until`, `merge`, `publish` and the terminal rule that every request used
to build (a dozen subscriptions per request, and a lock or two per frame in
`merge` and `publish`). The request subscribes once to its later messages and
once to its answer; each frame takes one hop.

    later:   ---i----c      (i: further input, c: cancel)
    answer:  -a---b--       (answer_for(inputs), disposed at c)
    result:  -a---b--C|     (C = cancelled_frame(c), terminal)

- a cancel ends the request: the answer is disposed (closing the provider call),
  then `cancelled_frame(msg)` is the terminal frame;
- other later messages go to the answer as `inputs` (speak's text, listen's
  audio) or, with `input_frame`, each is answered at once with that frame
  (chatStream's `duplicate_request_id`) while the answer runs;
- the first frame marked `terminal` ends the request (nothing follows it); an
  answer that errors ends with `error_frame(error)`, one that completes without a
  terminal frame with `incomplete_frame()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.subject import Subject

from operators.scheduling import Once
from protocol.frames import Frame

M = TypeVar("M")

_NO_INPUTS: Observable[Any] = reactivex.empty()
"""What `answer_for` gets when later input is answered by `input_frame` (immutable)."""


def request_scope(
    answer_for: Callable[[Observable[M]], Observable[Any]],
    later: Observable[M],
    *,
    is_cancel: Callable[[M], bool],
    cancelled_frame: Callable[[M], Frame],
    error_frame: Callable[[Exception], Frame],
    incomplete_frame: Callable[[], Frame],
    input_frame: Callable[[M], Frame] | None = None,
    to_frame: Callable[[Any], Frame] | None = None,
) -> Observable[Frame]:
    """A request's frames, ending with exactly one terminal frame (see the module).

    `error_frame`, `incomplete_frame` and `cancelled_frame` must return terminal
    frames; `input_frame` non-terminal ones. With `to_frame`, the answer's items are
    events that it turns into frames (in place of a `map` operator and its hop);
    a `to_frame` that raises ends the request as an answer error would.
    """

    def subscribe(
        observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        scope: _Scope[M] = _Scope(
            observer,
            is_cancel,
            cancelled_frame,
            error_frame,
            incomplete_frame,
            input_frame,
            to_frame,
        )
        scope.later = later.subscribe(scope.on_message, scheduler=scheduler)
        answer = answer_for(scope.inputs if scope.inputs is not None else _NO_INPUTS)
        if not scope.done:
            subscription = answer.subscribe(
                scope.on_frame, scope.on_error, scope.on_completed, scheduler=scheduler
            )
            if scope.done:
                subscription.dispose()
            else:
                scope.answer = subscription
        return Once(scope.dispose)

    return Observable(subscribe)


class _Scope(Generic[M]):
    """The state of one request's subscription."""

    __slots__ = (
        "answer",
        "cancelled_frame",
        "done",
        "error_frame",
        "incomplete_frame",
        "input_frame",
        "inputs",
        "is_cancel",
        "later",
        "observer",
        "to_frame",
    )

    def __init__(
        self,
        observer: abc.ObserverBase[Frame],
        is_cancel: Callable[[M], bool],
        cancelled_frame: Callable[[M], Frame],
        error_frame: Callable[[Exception], Frame],
        incomplete_frame: Callable[[], Frame],
        input_frame: Callable[[M], Frame] | None,
        to_frame: Callable[[Any], Frame] | None,
    ) -> None:
        self.observer = observer
        self.to_frame = to_frame
        self.is_cancel = is_cancel
        self.cancelled_frame = cancelled_frame
        self.error_frame = error_frame
        self.incomplete_frame = incomplete_frame
        self.input_frame = input_frame
        self.inputs: Subject[M] | None = Subject() if input_frame is None else None
        self.done = False
        self.answer: abc.DisposableBase | None = None
        self.later: abc.DisposableBase | None = None

    def on_message(self, msg: M) -> None:
        """A later message of the request: cancel, or input."""
        if self.done:
            return
        if self.is_cancel(msg):
            self.finish(self.cancelled_frame(msg))
        elif self.input_frame is not None:
            self.observer.on_next(self.input_frame(msg))
        elif self.inputs is not None:
            self.inputs.on_next(msg)

    def on_frame(self, item: Any) -> None:
        """A frame of the answer (or an event `to_frame` makes one of); the first
        terminal frame ends the request."""
        if self.done:
            return
        frame: Frame = item
        if self.to_frame is not None:
            try:
                frame = self.to_frame(item)
            except Exception as error:
                self.on_error(error)
                return
        if frame.terminal:
            self.finish(frame)
        else:
            self.observer.on_next(frame)

    def on_error(self, error: Exception) -> None:
        """The answer failed: its terminal error frame."""
        if not self.done:
            self.finish(self.error_frame(error))

    def on_completed(self) -> None:
        """The answer ended without a terminal frame."""
        if not self.done:
            self.finish(self.incomplete_frame())

    def finish(self, frame: Frame) -> None:
        """Stop the answer and the input, then emit the terminal `frame` and complete."""
        self.dispose()
        self.observer.on_next(frame)
        self.observer.on_completed()

    def dispose(self) -> None:
        """Stop listening to later messages and dispose the answer."""
        self.done = True
        for subscription in (self.answer, self.later):
            if subscription is not None:
                subscription.dispose()
        self.answer = self.later = None
