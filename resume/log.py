"""The request log: every frame a request sent, kept so a client can resume it.

The socket session appends each frame of a chatStream / speak / listen request
(already encoded, with its `seq`) as it goes out; a client that reconnects reads
the frames after the last one it saw, then the live rest, up to the terminal frame.

    owner:   sink = begin(key, id); sink.append(1) ... sink.append(n, terminal)
    resume:  open(key, id, after_seq=1) -> 2 ... n|

Two implementations share these semantics (`tests/test_request_log.py` runs one
suite against both): `MemoryRequestLog` (one process; the embedded default) and
`resume.redis_log.RedisRequestLog` (Redis Streams, any instance).

- A record is keyed by (client key, request id); another key never sees it.
- `seq == 1` starts a new record (a finished request id may be used again).
- At most `max_frames` frames are kept per request (the oldest go first); a
  resume after a frame that is gone gets `ResumeGap`.
- `retention` seconds after its terminal frame a record is forgotten; the memory
  log also forgets the oldest finished records first once all records hold more
  than `max_bytes` (running requests are bounded by `max_frames` only).
- Later client messages (cancel, speak's text, listen's audio) for a resumed
  request reach its running owner through `forward` when the owner is in this
  process.
"""

from __future__ import annotations

import asyncio
from array import array
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from protocol.messages import ClientMessage, Inbound


@dataclass(frozen=True, slots=True)
class LoggedFrame:
    """One recorded frame: its `seq`, the websocket payload, text or binary, terminal."""

    seq: int
    payload: bytes
    is_text: bool
    terminal: bool


class ResumeGap(Exception):
    """The frames right after `after_seq` are no longer kept (past `max_frames`)."""


class OwnerGone(Exception):
    """No frame comes and the instance that ran the request is gone (its lease
    expired); `last_seq` is the last frame read. Try `take_over`."""

    def __init__(self, last_seq: int) -> None:
        super().__init__(f"the request's owner is gone after frame {last_seq}")
        self.last_seq = last_seq


@dataclass(frozen=True, slots=True)
class Takeover:
    """A request this instance now runs: the fencing `token` it writes under, the last
    recorded `seq`, the `meta` its owner recorded (JSON: endpoint, router, the first
    message), every recorded frame (to rebuild the answer so far) and the later client
    messages its owners noted (speak's streamed `text`)."""

    token: str
    seq: int
    meta: bytes
    frames: list[LoggedFrame]
    inputs: tuple[bytes, ...] = ()
    """Client messages recorded after the first frame (`FrameSink.note`), in order."""


Forward = Callable[[Inbound], None]
"""Hands a later client message to the request's running pipeline."""


class FrameSink(Protocol):
    """Where one run of a request writes its frames, numbered from 1 in call order."""

    def append(self, payload: bytes, is_text: bool, terminal: bool) -> None:
        """Record the next frame (the websocket payload); cheap and synchronous (a
        Redis log batches the writes)."""
        ...

    def note(self, message: bytes) -> None:
        """Record a later client message of the request (speak's streamed `text`, as
        compact JSON) for a takeover; cheap and synchronous, batched like frames."""
        ...


class RequestLog(Protocol):
    """Where a request's frames are recorded and read back (see the module).

    `takes_over`: whether a request of a gone instance can be run again elsewhere
    (then `begin` gets the request's `meta`)."""

    takes_over: bool

    def begin(self, key: str, request_id: str, meta: bytes = b"") -> FrameSink:
        """A new run of the request (seq 1 next), replacing an earlier record of the id;
        `meta` is what another instance needs to take it over."""
        ...

    async def take_over(self, key: str, request_id: str) -> Takeover | None:
        """Run the request here when its owner is gone; None when another instance
        won the race, the request finished, or this log cannot (memory)."""
        ...

    def resume_sink(self, key: str, request_id: str, takeover: Takeover) -> FrameSink:
        """Where a run taken over writes its frames (after `takeover.seq`)."""
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

    async def relay(self, key: str, request_id: str, message: ClientMessage) -> bool:
        """Hand `message` to the request's owner on another instance; False when none
        could be reached (no owner: it ended, or its instance is gone)."""
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


class _Record:
    """One run of a request in memory: its payloads back to back in one `bytearray`,
    each frame's end offset in an `array`, text flags in a `bytearray`.

    A few growing buffers per request, not an object per frame: nothing for the
    garbage collector to walk, and no small long-lived blocks left scattered over
    the allocator's arenas (which kept far more memory resident than they held).
    """

    __slots__ = (
        "appended",
        "base",
        "buf",
        "done",
        "ends",
        "ident",
        "log",
        "max_frames",
        "terminal",
        "texts",
        "waiters",
    )

    def __init__(self, log: MemoryRequestLog, ident: tuple[str, str], max_frames: int) -> None:
        self.log = log
        self.ident = ident
        self.max_frames = max_frames
        self.terminal = False
        self.buf = bytearray()
        self.base = 0
        """Offset (since the run began) of `buf[0]`: the first kept frame's start."""
        self.ends = array("Q")
        self.texts = bytearray()
        self.appended = 0
        self.done = False
        self.waiters: list[asyncio.Future[None]] = []

    @classmethod
    def replay(cls, log: MemoryRequestLog, ident: tuple[str, str], done: Finished) -> _Record:
        """A finished run, from its compact form, for a reader."""
        record = cls(log, ident, 0)
        buf, ends, texts, record.base, record.appended = done
        record.buf = bytearray(buf)
        record.ends.frombytes(ends)
        record.texts = bytearray(texts)
        record.done = record.terminal = True
        return record

    @property
    def size(self) -> int:
        """Payload bytes kept."""
        return len(self.buf)

    @property
    def kept(self) -> int:
        """Frames kept."""
        return len(self.ends)

    @property
    def first_seq(self) -> int:
        return self.appended - len(self.ends) + 1

    def frame(self, index: int) -> tuple[bytes, bool]:
        """The `index`-th kept frame: its payload and whether it is text."""
        ends = self.ends
        start = ends[index - 1] if index else self.base
        base = self.base
        return bytes(self.buf[start - base : ends[index] - base]), bool(self.texts[index])

    def append(self, payload: bytes, is_text: bool, terminal: bool) -> None:
        """Record the next frame; the terminal one ends the run."""
        if self.done:
            return
        self.buf += payload
        self.ends.append(self.base + len(self.buf))
        self.texts.append(is_text)
        self.appended += 1
        excess = len(self.ends) - self.max_frames
        if excess > 0 and (excess >= 64 or terminal):
            self._trim(excess)
        if terminal:
            self.done = self.terminal = True
            self.log.finished(self)
        if self.waiters:
            self.wake()

    def note(self, message: bytes) -> None:
        """Nothing: a request in memory is never taken over."""

    def _trim(self, count: int) -> None:
        """Forget the `count` oldest frames (in batches: each trim moves the buffer)."""
        cut = self.ends[count - 1] - self.base
        del self.buf[:cut]
        self.base += cut
        del self.ends[:count]
        del self.texts[:count]

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def end(self) -> None:
        self.done = True
        self.wake()


Finished = tuple[bytes, bytes, bytes, int, int]
"""A finished run kept for its retention: payloads, end offsets, text flags, base and
frames appended. A tuple of untracked objects, which the garbage collector stops
tracking: the records kept cost it nothing (no object per request left to walk)."""


class MemoryRequestLog:
    """`RequestLog` in this process's memory: a reconnect to the same instance resumes."""

    takes_over = False

    def __init__(self, max_frames: int, retention: float, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.retention = retention
        self.max_bytes = max_bytes
        self._records: dict[tuple[str, str], _Record | Finished] = {}
        self._finished: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        """Finished records, oldest first: their expiry and size."""
        self._finished_bytes = 0
        self._owners: dict[tuple[str, str], Forward] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def begin(self, key: str, request_id: str, meta: bytes = b"") -> _Record:
        """A new record for the request (an older one of the same id is forgotten)."""
        ident = (key, request_id)
        old = self._records.get(ident)
        if isinstance(old, _Record):
            old.end()
        self._unfinish(ident)
        record = _Record(self, ident, self.max_frames)
        self._records[ident] = record
        return record

    def finished(self, record: _Record) -> None:
        """A record got its terminal frame: it is kept `retention` s, within `max_bytes`,
        in its compact form (readers already on it keep the record itself)."""
        ident = record.ident
        if self._records.get(ident) is not record:
            return
        size = record.size
        self._records[ident] = (
            bytes(record.buf),
            record.ends.tobytes(),
            bytes(record.texts),
            record.base,
            record.appended,
        )
        loop = asyncio.get_running_loop()
        self._finished[ident] = (loop.time() + self.retention, size)
        self._finished_bytes += size
        while self._finished_bytes > self.max_bytes and self._finished:
            self._evict(next(iter(self._finished)))
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.retention, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for ident, (expires, _) in list(self._finished.items()):
            if expires > now:
                self._sweeper = asyncio.get_running_loop().call_later(expires - now, self._sweep)
                return
            self._evict(ident)

    def _evict(self, ident: tuple[str, str]) -> None:
        _, size = self._finished.pop(ident)
        self._finished_bytes -= size
        if not isinstance(self._records.get(ident), _Record):
            self._records.pop(ident, None)

    def _unfinish(self, ident: tuple[str, str]) -> None:
        entry = self._finished.pop(ident, None)
        if entry is not None:
            self._finished_bytes -= entry[1]

    async def take_over(self, key: str, request_id: str) -> Takeover | None:
        """Never: a request in this process's memory dies with its process."""
        return None

    def resume_sink(self, key: str, request_id: str, takeover: Takeover) -> FrameSink:
        """Not used (no takeover in memory)."""
        raise NotImplementedError("the in-memory log has no takeover")

    def drop(self, key: str, request_id: str) -> None:
        """Forget a running request at once (readers end without a terminal frame)."""
        record = self._records.get((key, request_id))
        if isinstance(record, _Record) and not record.done:
            record.end()
            del self._records[(key, request_id)]

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

    async def relay(self, key: str, request_id: str, message: ClientMessage) -> bool:
        """One process: there is no other instance to reach."""
        return False

    async def open(
        self, key: str, request_id: str, after_seq: int
    ) -> AsyncIterator[LoggedFrame] | None:
        """Backlog after `after_seq`, then live frames, up to the terminal frame."""
        entry = self._records.get((key, request_id))
        if entry is None:
            return None
        if isinstance(entry, _Record):
            return _tail(entry, after_seq)
        return _tail(_Record.replay(self, (key, request_id), entry), after_seq)

    async def aclose(self) -> None:
        """Stop the sweeper and wake every reader."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for record in self._records.values():
            if isinstance(record, _Record):
                record.end()
        self._records.clear()
        self._finished.clear()
        self._owners.clear()


async def _tail(record: _Record, after_seq: int) -> AsyncIterator[LoggedFrame]:
    last = after_seq
    while True:
        # the frames kept are consecutive: the next one sits at a known index
        while record.kept:
            first = record.first_seq
            index = last + 1 - first
            if index < 0:
                raise ResumeGap(f"frames {last + 1}..{first - 1} are no longer kept")
            if index >= record.kept:
                break
            last += 1
            payload, is_text = record.frame(index)
            terminal = record.terminal and last == record.appended
            yield LoggedFrame(last, payload, is_text, terminal)
            if terminal:
                return
        if record.done:
            return
        waiter = asyncio.get_running_loop().create_future()
        record.waiters.append(waiter)
        await waiter
