"""`RequestLog` on Redis Streams: a request started on one instance resumes on any.

One stream per request, `{prefix}{key}:{request_id}`, with entry ids `0-{seq}` so
`XREAD` after `0-{after_seq}` is exactly "the frames after after_seq":

    append ─► pending (memory) ─► every `flush_interval`: one pipeline of
              XADD stream 0-seq MAXLEN ~ max_frames * {p: payload, k: kind}
              PEXPIRE stream running_ttl (retention after the terminal frame)
    open   ─► XREAD BLOCK from 0-{after_seq} until the terminal entry

The chat hot path never waits for Redis: appends gather in a list and one pipeline
(one round trip) carries every frame of every request that arrived meanwhile. A
failed write is logged once and dropped (the request goes on; only its resumability
suffers). Later client messages reach an owner in this process (`forward`), as in
`MemoryRequestLog`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from protocol.messages import Inbound
from resume.log import Forward, LoggedFrame, ResumeGap

log = logging.getLogger("sluice.resume")

TEXT, BINARY, TERMINAL = b"t", b"b", b"T"
"""The `k` field of an entry: a text frame, a binary frame, the terminal (text) frame."""
BLOCK_MS = 1000
"""How long one XREAD waits before a reader checks that its stream still exists."""
READ_COUNT = 512


class RedisRequestLog:
    """`RequestLog` on a Redis server (see the module)."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_frames: int,
        retention: float,
        running_ttl: float,
        flush_interval: float,
        prefix: str = "sluice:req:",
        close_redis: bool = True,
    ) -> None:
        self.redis = redis
        self._close_redis = close_redis
        self.max_frames = max_frames
        self.retention_ms = max(1, int(retention * 1000))
        self.running_ttl_ms = max(1, int(running_ttl * 1000))
        self.flush_interval = flush_interval
        self.prefix = prefix
        self._pending: list[tuple[str, int, bytes, bytes]] = []
        """(stream, seq, payload, kind); seq 0 deletes the stream."""
        self._timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._owners: dict[tuple[str, str], Forward] = {}
        self._failing = False
        self.round_trips = 0
        self.frames_written = 0
        self.bytes_written = 0

    def stream(self, key: str, request_id: str) -> str:
        """The stream name of a request of client key `key`."""
        return f"{self.prefix}{key}:{request_id}"

    # ---- writing ---------------------------------------------------------------------

    def begin(self, key: str, request_id: str) -> _Sink:
        """A new run of the request: its first frame replaces the stream."""
        return _Sink(self, self.stream(key, request_id))

    def write(self, stream: str, seq: int, payload: bytes, kind: bytes) -> None:
        """Queue one entry for the next pipeline (no Redis call here)."""
        self._pending.append((stream, seq, payload, kind))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.flush_interval, self._flush_soon
            )

    def drop(self, key: str, request_id: str) -> None:
        """Delete the request's stream with the next pipeline."""
        self.write(self.stream(key, request_id), 0, b"", b"")

    def _flush_soon(self) -> None:
        self._timer = None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Write everything pending, one pipeline per batch, until nothing is pending."""
        while self._pending:
            batch, self._pending = self._pending, []
            pipe = self.redis.pipeline(transaction=False)
            ttl: dict[str, int] = {}
            size = 0
            for stream, seq, payload, kind in batch:
                if seq == 0:
                    pipe.delete(stream)
                    ttl.pop(stream, None)
                    continue
                if seq == 1:
                    pipe.delete(stream)
                pipe.xadd(
                    stream,
                    {"p": payload, "k": kind},
                    id=f"0-{seq}",
                    maxlen=self.max_frames,
                    approximate=True,
                )
                size += len(payload)
                ttl[stream] = self.retention_ms if kind is TERMINAL else self.running_ttl_ms
            for stream, ms in ttl.items():
                pipe.pexpire(stream, ms)
            try:
                await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as error:
                if not self._failing:
                    log.warning(
                        "request log: Redis write failed; frames are not resumable meanwhile",
                        extra={"error": str(error), "frames": len(batch)},
                    )
                self._failing = True
                continue
            if self._failing:
                log.info("request log: Redis writes work again")
                self._failing = False
            self.round_trips += 1
            self.frames_written += len(batch)
            self.bytes_written += size

    # ---- owners in this process -------------------------------------------------------

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

    # ---- reading ---------------------------------------------------------------------

    async def open(
        self, key: str, request_id: str, after_seq: int
    ) -> AsyncIterator[LoggedFrame] | None:
        """The frames after `after_seq`, then the live rest (XREAD BLOCK), up to the
        terminal frame; None when the stream does not exist."""
        if self._pending:
            await self.flush()
        stream = self.stream(key, request_id)
        if not await self.redis.exists(stream):
            return None
        return self._tail(stream, after_seq)

    async def _tail(self, stream: str, after_seq: int) -> AsyncIterator[LoggedFrame]:
        last = after_seq
        while True:
            reply: Any = await self.redis.xread(
                {stream: f"0-{last}"}, count=READ_COUNT, block=BLOCK_MS
            )
            if not reply:
                if not await self.redis.exists(stream):
                    return
                continue
            for entry_id, fields in _entries(reply):
                seq = int(entry_id.split(b"-", 1)[1])
                if seq != last + 1:
                    raise ResumeGap(f"frames {last + 1}..{seq - 1} are no longer kept")
                last = seq
                kind = fields[b"k"]
                terminal = kind == TERMINAL
                yield LoggedFrame(seq, fields[b"p"], kind != BINARY, terminal)
                if terminal:
                    return

    async def aclose(self) -> None:
        """Write what is pending, then close the connection (when it is this log's)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        try:
            await self.flush()
        finally:
            self._owners.clear()
            if self._close_redis:
                await self.redis.aclose()


class _Sink:
    """One run of a request on Redis: numbers its frames and queues them."""

    __slots__ = ("log", "seq", "stream")

    def __init__(self, log: RedisRequestLog, stream: str) -> None:
        self.log = log
        self.stream = stream
        self.seq = 0

    def append(self, payload: bytes, is_text: bool, terminal: bool) -> None:
        """Queue the next frame for the log's next pipeline."""
        self.seq += 1
        kind = TERMINAL if terminal else TEXT if is_text else BINARY
        self.log.write(self.stream, self.seq, payload, kind)


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREAD's reply (RESP2 list or RESP3 dict) -> the one stream's entries."""
    if isinstance(reply, dict):
        return [e for entries in reply.values() for e in entries[0]]
    return [e for _, entries in reply for e in entries]
