"""A byte-bounded queue between Rx (sync `put`) and the socket's writer task.

Overflow policy: frames are never dropped silently. When the bytes waiting for a
slow consumer would pass `max_bytes`, `put` refuses (returns False) and the
queue is marked overflowed; the session then closes the socket (1008) and
disposes its requests (cancelling their provider calls), and `clear()` lets go
of what was queued, which releases the memory at once.

Each frame is queued as its encoded payload, whether it is text, and the time
it entered (`at`, any clock the caller chooses) so the writer can measure how
long it waited. The writer takes everything queued at once (`get_all`), so one
wake-up of its task flushes every frame that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import deque

Outbound = tuple[bytes, bool, float]
"""(payload, is_text, queued_at): one encoded websocket frame."""


class OutboundQueue:
    """FIFO of encoded frames (UTF-8 text or binary payloads), bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.overflowed = False
        self._items: deque[Outbound] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def put(self, payload: bytes, is_text: bool, at: float = 0.0) -> bool:
        """Queue one frame; False (and `overflowed`) when the byte bound would pass.

        A single frame larger than the bound is accepted when the queue is empty
        (the bound limits the backlog, not the frame size).
        """
        if self._closed or self.overflowed:
            return False
        size = len(payload)
        if self.queued_bytes + size > self.max_bytes and self._items:
            self.overflowed = True
            self._wake()
            return False
        self._items.append((payload, is_text, at))
        self.queued_bytes += size
        self._wake()
        return True

    def close(self) -> None:
        """No more frames: `get_all` drains what is queued, then returns None."""
        self._closed = True
        self._wake()

    def clear(self) -> None:
        """Drop every queued frame (the socket is being cut) and close."""
        self._items.clear()
        self.queued_bytes = 0
        self.close()

    async def get_all(self) -> list[Outbound] | None:
        """Every queued frame, oldest first, once there is one; None once closed and
        drained, or on overflow.

        The bytes stay counted against the bound until the writer calls `sent(n)`,
        so a peer that does not read cannot make the queue look empty.
        """
        while True:
            if self.overflowed:
                return None
            if self._items:
                items = list(self._items)
                self._items.clear()
                return items
            if self._closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            await waiter

    def sent(self, size: int) -> None:
        """The writer wrote `size` bytes of what `get_all` handed it."""
        self.queued_bytes -= size

    def __len__(self) -> int:
        return len(self._items)
