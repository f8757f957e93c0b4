"""An Observable read as an async iterator, for handlers that write as items arrive.

    async with RxIterator(source, scheduler) as items:
        async for item in items: ...

source:  -a--b--#        iteration: a, b, then the error is raised
source:  -a--b--|        iteration: a, b, then it stops
Leaving the `async with` block (the answer is written, the client went away, the
handler was cancelled) disposes the subscription, which cancels the provider
calls behind it. Items wait in an unbounded queue: every source fed to it is
bounded by its own pacing (chat text, audio paced to real time by speak).
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Generic, TypeVar

from reactivex import Observable, abc
from reactivex.notification import Notification, OnCompleted, OnError, OnNext

T = TypeVar("T")


class RxIterator(Generic[T]):
    """Subscribes `source` on `scheduler` when entered; yields its items; disposes on exit."""

    def __init__(self, source: Observable[T], scheduler: abc.SchedulerBase) -> None:
        self._source = source
        self._scheduler = scheduler
        self._queue: asyncio.Queue[Notification[T]] = asyncio.Queue()
        self._subscription: abc.DisposableBase | None = None
        self._done = False

    async def __aenter__(self) -> RxIterator[T]:
        queue = self._queue
        self._subscription = self._source.subscribe(
            lambda value: queue.put_nowait(OnNext(value)),
            lambda error: queue.put_nowait(OnError(error)),
            lambda: queue.put_nowait(OnCompleted()),
            scheduler=self._scheduler,
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.dispose()

    def dispose(self) -> None:
        """Stop listening: the subscription is disposed (idempotent)."""
        self._done = True
        if self._subscription is not None:
            self._subscription.dispose()
            self._subscription = None

    def __aiter__(self) -> RxIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        note = await self._queue.get()
        if isinstance(note, OnNext):
            value: T = note.value
            return value
        self.dispose()
        if isinstance(note, OnError):
            raise note.exception
        raise StopAsyncIteration
