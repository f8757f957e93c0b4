"""The request log: every frame a request sent, kept so a client can resume it.

The socket session appends each frame of a chatStream / speak / listen request
(already encoded, with its `seq`) as it goes out; a client that reconnects reads
the frames after the last one it saw, then the live rest, up to the terminal frame.

    owner:   append(1) append(2) ... append(n, terminal)
    resume:  open(key, id, after_seq=1) -> 2 ... n|

Two implementations share these semantics (`tests/test_request_log.py` runs one
suite against both): `MemoryRequestLog` (one process; the embedded default) and
`resume.redis_log.RedisRequestLog` (Redis Streams, any instance).

- A record is keyed by (client key, request id); another key never sees it.
- `seq == 1` starts a new record (a finished request id may be used again).
- At most `max_frames` frames are kept per request (the oldest go first); a
  resume after a frame that is gone gets `ResumeGap`.
- `retention` seconds after its terminal frame a record is forgotten.
- Later client messages (cancel, speak's text, listen's audio) for a resumed
  request reach its running owner through `forward` when the owner is in this
  process.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from protocol.messages import Inbound


@dataclass(frozen=True, slots=True)
class LoggedFrame:
    """One recorded frame: its `seq`, the websocket payload, text or binary, terminal."""

    seq: int
    payload: bytes
    is_text: bool
    terminal: bool


class ResumeGap(Exception):
    """The frames right after `after_seq` are no longer kept (past `max_frames`)."""


Forward = Callable[[Inbound], None]
"""Hands a later client message to the request's running pipeline."""


class RequestLog(Protocol):
    """Where a request's frames are recorded and read back (see the module)."""

    def append(self, key: str, request_id: str, frame: LoggedFrame) -> None:
        """Record one frame of a running request; cheap and synchronous (a Redis
        implementation batches the writes)."""
        ...

    def drop(self, key: str, request_id: str) -> None:
        """Forget a request that ended without a terminal frame (its socket closed
        normally, which cancels it)."""
        ...

    def own(self, key: str, request_id: str, forward: Forward | None) -> None:
        """Say that this process runs the request (`forward` reaches its pipeline),
        or no longer does (None)."""
        ...

    def forward(self, key: str, request_id: str, message: Inbound) -> bool:
        """Hand `message` to the request's owner; False when no owner here has it."""
        ...

    async def open(
        self, key: str, request_id: str, after_seq: int
    ) -> AsyncIterator[LoggedFrame] | None:
        """The frames after `after_seq` in order, then the live rest up to the terminal
        frame; None when the request is unknown to this key. The iterator raises
        `ResumeGap` when those frames are gone."""
        ...

    async def aclose(self) -> None:
        """Flush what is pending and release connections and timers."""
        ...


@dataclass(slots=True)
class _Record:
    frames: deque[LoggedFrame]
    done: bool = False
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    expiry: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class MemoryRequestLog:
    """`RequestLog` in this process's memory: a reconnect to the same instance resumes."""

    def __init__(self, max_frames: int, retention: float) -> None:
        self.max_frames = max_frames
        self.retention = retention
        self._records: dict[tuple[str, str], _Record] = {}
        self._owners: dict[tuple[str, str], Forward] = {}

    def __len__(self) -> int:
        return len(self._records)

    def append(self, key: str, request_id: str, frame: LoggedFrame) -> None:
        """Record `frame`; `seq == 1` replaces an earlier record of the same id."""
        ident = (key, request_id)
        record = self._records.get(ident)
        if record is None or frame.seq == 1:
            if record is not None:
                self._forget(ident, record)
            record = _Record(deque(maxlen=self.max_frames))
            self._records[ident] = record
        elif record.done or frame.seq != record.frames[-1].seq + 1:
            return  # another run of a reused id: the newest run owns the record
        record.frames.append(frame)
        if frame.terminal:
            self._end(ident, record)
        elif record.waiters:
            record.wake()

    def _end(self, ident: tuple[str, str], record: _Record) -> None:
        record.done = True
        record.wake()
        record.expiry = asyncio.get_running_loop().call_later(
            self.retention, self._expire, ident, record
        )

    def _expire(self, ident: tuple[str, str], record: _Record) -> None:
        if self._records.get(ident) is record:
            del self._records[ident]

    def _forget(self, ident: tuple[str, str], record: _Record) -> None:
        if record.expiry is not None:
            record.expiry.cancel()
        record.done = True
        record.wake()
        self._records.pop(ident, None)

    def drop(self, key: str, request_id: str) -> None:
        """Forget the request at once (readers end without a terminal frame)."""
        record = self._records.get((key, request_id))
        if record is not None and not record.done:
            self._forget((key, request_id), record)

    def own(self, key: str, request_id: str, forward: Forward | None) -> None:
        """Register (or, with None, remove) the running request's message door."""
        if forward is None:
            self._owners.pop((key, request_id), None)
        else:
            self._owners[(key, request_id)] = forward

    def forward(self, key: str, request_id: str, message: Inbound) -> bool:
        """Pass `message` to the owner in this process; False when there is none."""
        door = self._owners.get((key, request_id))
        if door is None:
            return False
        door(message)
        return True

    async def open(
        self, key: str, request_id: str, after_seq: int
    ) -> AsyncIterator[LoggedFrame] | None:
        """Backlog after `after_seq`, then live frames, up to the terminal frame."""
        record = self._records.get((key, request_id))
        if record is None:
            return None
        return _tail(record, after_seq)

    async def aclose(self) -> None:
        """Cancel the expiry timers and wake every reader."""
        for record in self._records.values():
            if record.expiry is not None:
                record.expiry.cancel()
            record.done = True
            record.wake()
        self._records.clear()
        self._owners.clear()


async def _tail(record: _Record, after_seq: int) -> AsyncIterator[LoggedFrame]:
    last = after_seq
    while True:
        frames = record.frames
        # seqs in the deque are consecutive: the next one sits at a known index
        while frames:
            index = last + 1 - frames[0].seq
            if index < 0:
                raise ResumeGap(f"frames {last + 1}..{frames[0].seq - 1} are no longer kept")
            if index >= len(frames):
                break
            frame = frames[index]
            last = frame.seq
            yield frame
            if frame.terminal:
                return
        if record.done:
            return
        waiter = asyncio.get_running_loop().create_future()
        record.waiters.append(waiter)
        await waiter
