"""Split one socket's messages into per-request pipelines and merge their frames.

This is `group_by(request_id)` with the lifetimes a gateway needs: a group lives
from a request's first message until its pipeline ends (its terminal frame), so a
finished id can be used again; `cancel` for an id that is not active is a no-op;
an error in one request never reaches the shared connection stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SingleAssignmentDisposable
from reactivex.subject import Subject

from protocol.frames import Frame
from protocol.messages import CANCEL, BadMessage, ClientMessage, Inbound

StartRequest = Callable[[ClientMessage, Observable[ClientMessage]], Observable[Frame]]
"""(first message, later messages of the same request) -> that request's frames."""


def per_request(
    start: StartRequest,
    *,
    bad_message: Callable[[BadMessage, bool], Frame],
    admit: Callable[[ClientMessage, int], Frame | None] = lambda _msg, _active: None,
    crashed: Callable[[str, Exception], Frame],
    on_active_change: Callable[[Mapping[str, ClientMessage]], None] | None = None,
) -> Callable[[Observable[Inbound]], Observable[Frame]]:
    """Inbound messages of one socket in, the merged frames of all its requests out.

    inbound: -a1-b1-a2(cancel)-x(bad json)-|
    frames:  --A--B--A(cancelled)--X--|      (remaining requests disposed at |)

    - the first message of a new id goes through `admit(msg, active_count)`; a
      returned frame refuses it (e.g. too many requests, shutting down);
    - `bad_message(msg, is_active)` turns a rejected frame into an error frame,
      non-terminal when its request is active (that request goes on);
    - `crashed(request_id, error)` makes the terminal frame should a request's
      pipeline error (it should not: pipelines end with `terminal_rule`);
    - `on_active_change(first_messages)` hears the requests in flight (by id, the
      message that started each) whenever that set changes.
    When the inbound stream ends (the socket closed), every active request is
    disposed, which cancels its provider calls.
    """

    def operator(inbound: Observable[Inbound]) -> Observable[Frame]:
        def subscribe(
            observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            active: dict[str, tuple[Subject[ClientMessage], SingleAssignmentDisposable]] = {}
            started: dict[str, ClientMessage] = {}
            requests = CompositeDisposable()

            def changed() -> None:
                if on_active_change is not None:
                    on_active_change(started)

            def end(request_id: str, handle: SingleAssignmentDisposable) -> None:
                current = active.get(request_id)
                if current is not None and current[1] is handle:
                    del active[request_id]
                    del started[request_id]
                    changed()
                requests.remove(handle)

            def begin(msg: ClientMessage) -> None:
                refusal = admit(msg, len(active))
                if refusal is not None:
                    observer.on_next(refusal)
                    return
                rest: Subject[ClientMessage] = Subject()
                handle = SingleAssignmentDisposable()
                active[msg.request_id] = (rest, handle)
                started[msg.request_id] = msg
                requests.add(handle)
                changed()
                request_id = msg.request_id

                def on_error(error: Exception) -> None:
                    observer.on_next(crashed(request_id, error))
                    end(request_id, handle)

                try:
                    frames = start(msg, rest)
                except Exception as error:
                    on_error(error)
                    return
                handle.disposable = frames.subscribe(
                    observer.on_next,
                    on_error,
                    lambda: end(request_id, handle),
                    scheduler=scheduler,
                )

            def on_next(msg: Inbound) -> None:
                if isinstance(msg, BadMessage):
                    is_active = msg.request_id is not None and msg.request_id in active
                    observer.on_next(bad_message(msg, is_active))
                    return
                current = active.get(msg.request_id)
                if current is not None:
                    current[0].on_next(msg)
                elif msg.type != CANCEL:
                    begin(msg)

            def close_all(*_: Any) -> None:
                active.clear()
                started.clear()
                requests.dispose()

            def on_completed() -> None:
                close_all()
                observer.on_completed()

            def on_error(error: Exception) -> None:
                close_all()
                observer.on_error(error)

            source = inbound.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
            return CompositeDisposable(source, requests)

        return Observable(subscribe)

    return operator
