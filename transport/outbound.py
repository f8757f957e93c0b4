"""A byte-bounded queue between Rx (sync `put`) and the socket's writer task.

Overflow policy: frames are never dropped silently. When the bytes waiting for a
slow consumer would pass `max_bytes`, `put` refuses (returns False) and the
queue is marked overflowed; the session then closes the socket (1008) and
disposes its requests (cancelling their provider calls), and `clear()` lets go
of what was queued, which releases the memory at once.

Each frame is queued with the time it entered (`at`, any clock the caller
chooses) so the writer can measure how long it waited.
"""

from __future__ import annotations

import asyncio
from collections import deque


class OutboundQueue:
    """FIFO of encoded frames (`str` text or `bytes` binary), bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.overflowed = False
        self._items: deque[tuple[str | bytes, float]] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, item: str | bytes, at: float = 0.0) -> bool:
        """Queue one frame; False (and `overflowed`) when the byte bound would pass.

        A single frame larger than the bound is accepted when the queue is empty
        (the bound limits the backlog, not the frame size).
        """
        if self._closed or self.overflowed:
            return False
        size = len(item)
        if self.queued_bytes + size > self.max_bytes and self._items:
            self.overflowed = True
            self._ready.set()
            return False
        self._items.append((item, at))
        self.queued_bytes += size
        self._ready.set()
        return True

    def close(self) -> None:
        """No more frames: `get` drains what is queued, then returns None."""
        self._closed = True
        self._ready.set()

    def clear(self) -> None:
        """Drop every queued frame (the socket is being cut) and close."""
        self._items.clear()
        self.queued_bytes = 0
        self.close()

    async def get(self) -> tuple[str | bytes, float] | None:
        """The next frame and its queue time; None once closed and drained, or on overflow."""
        while True:
            if self.overflowed:
                return None
            if self._items:
                item = self._items.popleft()
                self.queued_bytes -= len(item[0])
                return item
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()

    def __len__(self) -> int:
        return len(self._items)
