"""Order of subscriptions and items: `concat_eager`, `merge_now`, `then_emit`, `enclose`.

`concat_eager`: run inner observables at once, deliver their items in arrival order.

The listen pipeline starts transcribing each speech segment as soon as it
begins (segments overlap when a provider is slower than speech), but a client
must read segment N's transcripts before segment N+1's. `concat` would start
N+1 only after N completed; `merge` would interleave. This subscribes to every
inner observable when it arrives and buffers what a later one emits until all
earlier ones have completed.

`merge_now` and `then_emit` replace `reactivex.merge` / `reactivex.concat` where a
hot source is involved: those emit their sources through the subscription's
scheduler, which under the app's `AsyncIOScheduler` subscribes them a loop turn
later, and a hot source (a client's audio) loses what it emits meanwhile.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SingleAssignmentDisposable

T = TypeVar("T")


class _Inner:
    __slots__ = ("done", "error", "items")

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self.done = False
        self.error: Exception | None = None


def concat_eager() -> Callable[[Observable[Observable[T]]], Observable[T]]:
    """Observable of observables in; the items of each, in the order the inners arrived.

    outer:   -A-----B------|
    A:        -a1-------a2-|
    B:              -b1-|            (runs while A still runs; b1 is held)
    result:  ---a1-------a2-b1-|
    An inner error is delivered in order (after every earlier inner completed)
    and disposes the rest; an outer error is delivered at once. Completes when
    the outer and every inner completed.
    """

    def operator(source: Observable[Observable[T]]) -> Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            group = CompositeDisposable()
            queue: deque[_Inner] = deque()
            state = {"outer_done": False, "stopped": False}

            def stop_with(error: Exception) -> None:
                state["stopped"] = True
                group.dispose()
                observer.on_error(error)

            def drain() -> None:
                while queue and not state["stopped"]:
                    head = queue[0]
                    while head.items:
                        observer.on_next(head.items.popleft())
                        if state["stopped"]:
                            return
                    if head.error is not None:
                        stop_with(head.error)
                        return
                    if not head.done:
                        return
                    queue.popleft()
                if not queue and state["outer_done"] and not state["stopped"]:
                    state["stopped"] = True
                    observer.on_completed()

            def on_inner(inner_source: Observable[T]) -> None:
                if state["stopped"]:
                    return
                inner = _Inner()
                queue.append(inner)
                handle = SingleAssignmentDisposable()
                group.add(handle)

                def on_next(value: T) -> None:
                    if state["stopped"]:
                        return
                    if queue[0] is inner and not inner.items:
                        observer.on_next(value)
                    else:
                        inner.items.append(value)

                def on_error(error: Exception) -> None:
                    inner.error = error
                    drain()

                def on_completed() -> None:
                    inner.done = True
                    group.remove(handle)
                    drain()

                handle.disposable = inner_source.subscribe(
                    on_next, on_error, on_completed, scheduler=scheduler
                )

            def on_outer_completed() -> None:
                state["outer_done"] = True
                drain()

            def on_outer_error(error: Exception) -> None:
                if not state["stopped"]:
                    stop_with(error)

            outer = SingleAssignmentDisposable()
            group.add(outer)
            outer.disposable = source.subscribe(
                on_inner, on_outer_error, on_outer_completed, scheduler=scheduler
            )
            return group

        return Observable(subscribe)

    return operator


def merge_now(*sources: Observable[T]) -> Observable[T]:
    """`reactivex.merge`, but every source is subscribed before `subscribe` returns.

    a:      -1---3-|
    b:      ---2----4|
    result: -1-2-3--4|   (an error from any source ends the result at once)
    `reactivex.merge` walks its sources on the subscription's scheduler: on the
    app's AsyncIOScheduler a source is subscribed one loop turn later and misses
    whatever a Subject (a request's later messages) emits meanwhile, e.g. a cancel
    sent right behind its request. Items pass straight through, with no lock (all
    of Sluice's Rx runs on the event loop's thread): this sits on every reply and
    every frame a conversation sends, where `merge_all`'s per-source locks and
    wrappers were a measurable share of the CPU (docs/performance.md).
    """

    def subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        group = CompositeDisposable()
        state = {"open": len(sources), "stopped": False}

        def on_error(error: Exception) -> None:
            if not state["stopped"]:
                state["stopped"] = True
                observer.on_error(error)
                group.dispose()

        def on_completed() -> None:
            state["open"] -= 1
            if state["open"] == 0 and not state["stopped"]:
                state["stopped"] = True
                observer.on_completed()

        if not sources:
            observer.on_completed()
            return group
        for source in sources:
            if state["stopped"]:
                break
            inner = SingleAssignmentDisposable()
            group.add(inner)
            inner.disposable = source.subscribe(
                observer.on_next, on_error, on_completed, scheduler=scheduler
            )
        return group

    return Observable(subscribe)


def then_emit(last: Callable[[], T]) -> Callable[[Observable[T]], Observable[T]]:
    """When the source completes, emit `last()` (computed then), then complete.

    source: -a-b-|
    result: -a-b-(L|)    (errors pass through; `last` is not called)
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_completed() -> None:
                observer.on_next(last())
                observer.on_completed()

            return source.subscribe(
                observer.on_next, observer.on_error, on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator


def enclose(
    head: Callable[[], T], tail: Callable[[], T]
) -> Callable[[Observable[T]], Observable[T]]:
    """`head()` at subscription, the source's items, `tail()` when it completes.

    source: --a-b-|
    result: H-a-b-(T|)    (H before the source is subscribed; errors pass, no T)
    `start_with` / `concat` would subscribe the source a scheduler tick late
    (see `merge_now`); this subscribes it at once.
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_completed() -> None:
                observer.on_next(tail())
                observer.on_completed()

            observer.on_next(head())
            return source.subscribe(
                observer.on_next, observer.on_error, on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator
