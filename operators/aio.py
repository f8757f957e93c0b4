"""The one place where asyncio enters Rx (and Rx leaves for asyncio).

- `from_async_iterable(factory)`: each subscription calls `factory()` for a fresh
  async iterator and pumps it from a new task; disposing cancels the task, which
  closes the iterator (and so the upstream HTTP stream) at its next await.
- `from_awaitable(factory)`: the same for one awaitable result.
- `to_future(source, scheduler)`: subscribe on the app's scheduler and resolve with
  the last value (or the error).

A retry resubscribes, and every subscription makes a new call: nothing here wraps
a future that already exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable

T = TypeVar("T")


def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def from_async_iterable(factory: Callable[[], AsyncIterator[T]]) -> Observable[T]:
    """Cold Observable over a fresh async iterator per subscription.

    iterator:  a   b   c   (end)
    result:    -a--b---c---|
    Errors raised by the iterator become `on_error`. Disposing the subscription
    cancels the pumping task; the iterator's `aclose()` runs in that task.
    """

    def subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        loop = _running_loop()
        iterator = factory()

        async def pump() -> None:
            try:
                async for item in iterator:
                    observer.on_next(item)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                observer.on_error(error)
                return
            finally:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            observer.on_completed()

        task = loop.create_task(pump())

        def cancel() -> None:
            task.cancel()

        return Disposable(cancel)

    return reactivex.create(subscribe)


def from_awaitable(factory: Callable[[], Awaitable[T]]) -> Observable[T]:
    """Cold Observable of one value: each subscription awaits a new `factory()`.

    result: ------v|   (or ------#)
    Disposing cancels the awaiting task.
    """

    async def one() -> AsyncIterator[T]:
        yield await factory()

    return from_async_iterable(one)


def to_future(source: Observable[T], scheduler: abc.SchedulerBase) -> asyncio.Future[T]:
    """Subscribe `source` on `scheduler`; the future gets its last value or its error.

    Cancelling the future disposes the subscription. A source that completes
    empty fails the future with `LookupError`.
    """
    loop = _running_loop()
    future: asyncio.Future[T] = loop.create_future()
    last: list[T] = []

    def on_next(value: T) -> None:
        last[:] = [value]

    def on_error(error: Exception) -> None:
        if not future.done():
            future.set_exception(error)

    def on_completed() -> None:
        if future.done():
            return
        if last:
            future.set_result(last[0])
        else:
            future.set_exception(LookupError("the source completed without a value"))

    subscription = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)

    def on_done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            subscription.dispose()

    future.add_done_callback(on_done)
    return future
