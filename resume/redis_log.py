"""`RequestLog` on Redis Streams: a request started on one instance resumes on any,
and is taken over when the instance that ran it is gone.

Keys of one request (`{p}` = prefix + client key + request id):

    {p}          stream, entry ids 0-{seq}, fields p (payload) and k (t, b, T = terminal)
    {p}:fence    the token of the run allowed to write (fencing)
    {p}:lease    the same token, PX `lease`: present while its owner lives
    {p}:meta     what a takeover needs to run the request again (endpoint, first message)
    {p}:gen      INCR per run: the token's generation
    {p}:in       list: later client messages the owners noted (speak's streamed text)

Writing: appends gather in memory; every `flush_interval` one pipeline carries, per
request, one script call that checks the fence, XADDs its frames (`MAXLEN ~`),
renews the lease and the TTLs (retention after the terminal frame, which also
drops the lease). The chat hot path never waits for Redis. The owner renews the
leases of its running requests every lease/3 in one pipeline.

Reading: XREAD BLOCK after 0-{after_seq}; when nothing comes and the lease is gone
(kill -9, OOM, node loss) the reader raises `OwnerGone`: its session calls
`take_over`, a script that sets a new fence and lease only if the lease is still
absent, so of several resuming instances exactly one wins; the others keep reading
the winner's frames.

A failed write is logged once and dropped (the request goes on; only its
resumability suffers). Later client messages reach an owner in this process
(`forward`), as in `MemoryRequestLog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from protocol.messages import ClientMessage, Inbound
from resume.inbox import Inbox, encode_message, owner_of
from resume.log import Forward, LoggedFrame, OwnerGone, ResumeGap, Takeover

log = logging.getLogger("sluice.resume")

TEXT, BINARY, TERMINAL = b"t", b"b", b"T"
"""The `k` field of an entry: a text frame, a binary frame, the terminal (text) frame."""
READ_COUNT = 512

# One call per flush for every request with frames pending. ARGV: maxlen retention_ms
# running_ms lease_ms, then per request: stream token first_seq kinds start meta and
# one payload per character of `kinds` (t, b, T). The other keys of a request are
# its stream's name plus a suffix (a single Redis, not a cluster). Returns one 1/0
# per request: 0 when its fencing token is no longer the current one.
APPEND = """
local maxlen, retention, running, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
local i = 5
while i <= #ARGV do
  local s, token, first, kinds = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local start, meta = ARGV[i + 4], ARGV[i + 5]
  local n = #kinds
  i = i + 6
  local ok = 1
  if start == '1' then
    redis.call('DEL', s, s .. ':in')
    redis.call('SET', s .. ':fence', token)
    if meta ~= '' then redis.call('SET', s .. ':meta', meta) end
  elseif redis.call('GET', s .. ':fence') ~= token then
    ok = 0
  end
  if ok == 1 then
    for j = 0, n - 1 do
      redis.pcall('XADD', s, 'MAXLEN', '~', maxlen, '0-' .. (first + j), 'p', ARGV[i + j],
                  'k', string.sub(kinds, j + 1, j + 1))
    end
    local ttl = running
    if string.sub(kinds, n, n) == 'T' then
      ttl = retention
      redis.call('DEL', s .. ':lease')
    else
      redis.call('SET', s .. ':lease', token, 'PX', lease)
    end
    redis.call('PEXPIRE', s, ttl)
    redis.call('PEXPIRE', s .. ':fence', ttl)
    redis.call('PEXPIRE', s .. ':meta', ttl)
  end
  out[#out + 1] = ok
  i = i + n
end
return out
"""

# KEYS: fence lease; ARGV: token lease_ms. Returns 0 when fenced out.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Client messages noted for a takeover (speak's streamed text), after the frames of
# the same flush. KEYS: fence in; ARGV: token ttl_ms message...; 0 when fenced out.
NOTE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: stream fence lease meta gen; ARGV: instance lease_ms.
# Returns nil unless this caller won: {token, meta, last entry id}.
TAKE_OVER = """
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 1 then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'k' and fields[i + 1] == 'T' then return nil end
  end
end
local token = ARGV[1] .. ':' .. redis.call('INCR', KEYS[5])
redis.call('SET', KEYS[2], token)
redis.call('SET', KEYS[3], token, 'PX', ARGV[2])
local last_id = '0-0'
if #last == 1 then last_id = last[1][1] end
return {token, redis.call('GET', KEYS[4]) or '', last_id}
"""


class RedisRequestLog:
    """`RequestLog` on a Redis server (see the module)."""

    takes_over = True

    def __init__(
        self,
        redis: Redis,
        *,
        max_frames: int,
        retention: float,
        running_ttl: float,
        flush_interval: float,
        lease: float = 3.0,
        prefix: str = "sluice:req:",
        close_redis: bool = True,
    ) -> None:
        self.redis = redis
        self._close_redis = close_redis
        self.max_frames = max_frames
        self.retention_ms = max(1, int(retention * 1000))
        self.running_ttl_ms = max(1, int(running_ttl * 1000))
        self.flush_interval = flush_interval
        self.lease = lease
        self.lease_ms = max(1, int(lease * 1000))
        self.prefix = prefix
        self.instance = uuid.uuid4().hex[:12]
        self._runs = 0
        self._scripts = {"append": APPEND, "renew": RENEW, "take_over": TAKE_OVER, "note": NOTE}
        self._shas: dict[str, str] = {}
        self._stale = False
        self._loading = asyncio.Lock()
        self._dirty: list[_Sink] = []
        """Sinks with frames waiting for the next flush."""
        self._dropped: list[str] = []
        self._noted: list[_Sink] = []
        """Sinks with client messages noted for the next flush."""
        self._running: set[_Sink] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._owners: dict[tuple[str, str], Forward] = {}
        self.inbox = Inbox(redis, self.inbox_channel(self.instance), self._deliver)
        self._failing = False
        self.round_trips = 0
        self.frames_written = 0
        self.bytes_written = 0

    def stream(self, key: str, request_id: str) -> str:
        """The stream name of a request of client key `key`."""
        return f"{self.prefix}{key}:{request_id}"

    def inbox_channel(self, instance: str) -> str:
        """The pub/sub channel where `instance` hears messages for its requests."""
        return f"{self.prefix}inbox:{instance}"

    def _token(self) -> str:
        self._runs += 1
        return f"{self.instance}:{self._runs}"

    # ---- writing ---------------------------------------------------------------------

    def begin(self, key: str, request_id: str, meta: bytes = b"") -> _Sink:
        """A new run of the request: its first frame replaces the stream; `meta` is
        what a takeover needs to run it again."""
        return _Sink(self, self.stream(key, request_id), self._token(), 0, meta)

    def resume_sink(self, key: str, request_id: str, takeover: Takeover) -> _Sink:
        """The sink of a run taken over: frames after `takeover.seq`, under its token."""
        sink = _Sink(self, self.stream(key, request_id), takeover.token, takeover.seq, b"")
        self._running.add(sink)
        self._start_renewer()
        return sink

    def dirty(self, sink: _Sink) -> None:
        """`sink` has frames for the next flush (no Redis call here)."""
        self._dirty.append(sink)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.flush_interval, self._flush_soon
            )

    def noted(self, sink: _Sink) -> None:
        """`sink` has client messages for the next flush (no Redis call here)."""
        self._noted.append(sink)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.flush_interval, self._flush_soon
            )

    def drop(self, key: str, request_id: str) -> None:
        """Delete the request's stream (and its lease) with the next pipeline."""
        self._dropped.append(self.stream(key, request_id))
        for sink in [s for s in self._running if s.stream == self.stream(key, request_id)]:
            self._running.discard(sink)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(0, self._flush_soon)

    def _flush_soon(self) -> None:
        self._timer = None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Write everything pending: one round trip (one script call for all requests,
        and the drops) per batch, until nothing is pending."""
        while self._dirty or self._dropped or self._noted:
            sinks, self._dirty = self._dirty, []
            dropped, self._dropped = self._dropped, []
            notes = self._notes()
            args: list[Any] = [
                self.max_frames,
                self.retention_ms,
                self.running_ttl_ms,
                self.lease_ms,
            ]
            frames = size = 0
            for sink in sinks:
                payloads = sink.payloads
                start = sink.first == 1
                args += (
                    sink.stream,
                    sink.token,
                    sink.first,
                    bytes(sink.kinds),
                    "1" if start else "0",
                    sink.meta if start else b"",
                )
                args += payloads
                frames += len(payloads)
                size += sum(map(len, payloads))
                if sink.ended:
                    self._running.discard(sink)
                sink.clear()
            try:
                results = await self._run(_appends(self, args if sinks else None, dropped, notes))
            except (RedisError, OSError) as error:
                self._write_failed(error, frames)
                continue
            self._write_worked()
            done = results[0] if sinks else []
            if isinstance(done, Exception):
                self._write_failed(done, frames)
                continue
            for sink, result in zip(sinks, done, strict=False):
                if result == 0:
                    self._fenced(sink)
                elif not sink.fenced and not sink.ended:
                    self._running.add(sink)
            if self._running:
                self._start_renewer()
            self.round_trips += 1
            self.frames_written += frames
            self.bytes_written += size

    def _notes(self) -> list[tuple[list[str], list[Any]]]:
        """The noted messages of the next flush: (keys, args) of one `note` call per sink."""
        noted, self._noted = self._noted, []
        calls: list[tuple[list[str], list[Any]]] = []
        for sink in noted:
            messages, sink.inputs = sink.inputs, []
            if messages and not sink.fenced:
                keys = [sink.keys[1], f"{sink.stream}:in"]
                calls.append((keys, [sink.token, self.running_ttl_ms, *messages]))
        return calls

    def evalsha(self, pipe: Any, name: str, keys: list[str], args: list[Any]) -> None:
        """Queue script `name` on `pipe` by its sha (loaded by `_run`)."""
        pipe.evalsha(self._shas[name], len(keys), *keys, *args)

    async def _load_scripts(self) -> None:
        """Load every script (once at a time: concurrent callers share one load, and
        `_shas` is complete or empty, never half filled)."""
        async with self._loading:
            if self._shas and not self._stale:
                return
            shas = {}
            for name, text in self._scripts.items():
                shas[name] = await self.redis.script_load(text)
            self._shas = shas
            self._stale = False

    async def _run(self, commands: Any) -> list[Any]:
        """One pipeline of `commands(pipe)` (one round trip); the scripts are loaded
        once, and again after Redis lost them (a restart: NOSCRIPT)."""
        if not self._shas:
            await self._load_scripts()
        pipe = self.redis.pipeline(transaction=False)
        commands(pipe)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in results):
            self._stale = True
            await self._load_scripts()
            pipe = self.redis.pipeline(transaction=False)
            commands(pipe)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, ResponseError):
                raise result
        return results

    def _write_failed(self, error: BaseException, frames: int) -> None:
        if not self._failing:
            log.warning(
                "request log: Redis write failed; frames are not resumable meanwhile",
                extra={"error": str(error), "frames": frames},
            )
        self._failing = True

    def _write_worked(self) -> None:
        if self._failing:
            log.info("request log: Redis writes work again")
            self._failing = False

    def _fenced(self, sink: _Sink) -> None:
        if not sink.fenced:
            sink.fenced = True
            self._running.discard(sink)
            log.warning(
                "request log: another instance took this request over; its frames "
                "from here are not recorded",
                extra={"stream": sink.stream},
            )

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_leases())

    async def _renew_leases(self) -> None:
        """While requests run here: renew their leases every lease/3, one pipeline."""
        while self._running:
            await asyncio.sleep(self.lease / 3)
            sinks = [s for s in self._running if not s.ended]
            if not sinks:
                continue

            def commands(pipe: Any, sinks: list[_Sink] = sinks) -> None:
                for sink in sinks:
                    self.evalsha(pipe, "renew", sink.keys[1:3], [sink.token, self.lease_ms])

            try:
                results = await self._run(commands)
            except (RedisError, OSError) as error:
                self._write_failed(error, 0)
                continue
            for sink, result in zip(sinks, results, strict=False):
                if result == 0:
                    self._fenced(sink)

    # ---- owners in this process -------------------------------------------------------

    def own(self, key: str, request_id: str, forward: Forward | None) -> None:
        """Register (or, with None, remove) the running request's message door."""
        if forward is None:
            self._owners.pop((key, request_id), None)
        else:
            self._owners[(key, request_id)] = forward
            self.inbox.start()

    def forward(self, key: str, request_id: str, message: Inbound) -> bool:
        """Pass `message` to the owner in this process; False when there is none."""
        door = self._owners.get((key, request_id))
        if door is None:
            return False
        door(message)
        return True

    async def relay(self, key: str, request_id: str, message: ClientMessage) -> bool:
        """Publish `message` to the instance whose token fences the request (one GET,
        one PUBLISH); False when no instance runs it or none heard the message."""
        stream = self.stream(key, request_id)
        token: Any = await self.redis.get(f"{stream}:fence")
        if token is None or not await self.redis.exists(f"{stream}:lease"):
            return False
        instance = owner_of(token)
        if instance == self.instance:
            return self.forward(key, request_id, message)
        receivers: Any = await self.redis.publish(
            self.inbox_channel(instance), encode_message(key, message)
        )
        return bool(receivers)

    def _deliver(self, key: str, message: ClientMessage) -> None:
        """A message relayed from another instance: to the request's pipeline here (a
        request that ended meanwhile drops it; its terminal frame tells the client)."""
        if not self.forward(key, message.request_id, message):
            log.info(
                "a relayed message for a request no longer running here",
                extra={"request_id": message.request_id, "type": message.type},
            )

    # ---- reading and taking over --------------------------------------------------------

    async def open(
        self, key: str, request_id: str, after_seq: int
    ) -> AsyncIterator[LoggedFrame] | None:
        """The frames after `after_seq`, then the live rest (XREAD BLOCK), up to the
        terminal frame; None when the stream does not exist. Raises `OwnerGone` (with
        the last seq read) when no frame comes and the owner's lease is gone."""
        if self._dirty or self._dropped:
            await self.flush()
        stream = self.stream(key, request_id)
        if not await self.redis.exists(stream):
            return None
        return self._tail(stream, after_seq)

    async def _tail(self, stream: str, after_seq: int) -> AsyncIterator[LoggedFrame]:
        last = after_seq
        block = max(1, min(1000, self.lease_ms // 2))
        while True:
            reply: Any = await self.redis.xread(
                {stream: f"0-{last}"}, count=READ_COUNT, block=block
            )
            if not reply:
                found, leased = await asyncio.gather(
                    self.redis.exists(stream), self.redis.exists(f"{stream}:lease")
                )
                if not found:
                    return
                if not leased:
                    raise OwnerGone(last)
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

    async def take_over(self, key: str, request_id: str) -> Takeover | None:
        """Run the request here if its owner's lease is gone: exactly one caller of all
        instances wins (a Redis script); None for the others, or when it finished."""
        stream = self.stream(key, request_id)
        keys = [stream, f"{stream}:fence", f"{stream}:lease", f"{stream}:meta", f"{stream}:gen"]
        args = [self.instance, self.lease_ms]
        results = await self._run(lambda pipe: self.evalsha(pipe, "take_over", keys, args))
        won: Any = results[0]
        if isinstance(won, Exception):
            raise won
        if not won:
            return None
        token, meta, last_id = won
        seq = int(last_id.split(b"-", 1)[1])
        raw: Any = await self.redis.xrange(stream, min="-", max=f"0-{seq}")
        inputs: Any = await self.redis.lrange(f"{stream}:in", 0, -1)
        frames = [
            LoggedFrame(int(i.split(b"-", 1)[1]), f[b"p"], f[b"k"] != BINARY, False) for i, f in raw
        ]
        log.warning(
            "request taken over: its instance is gone (lease expired)",
            extra={"stream": stream, "after_seq": seq},
        )
        return Takeover(token.decode(), seq, bytes(meta), frames, tuple(map(bytes, inputs)))

    async def aclose(self) -> None:
        """Write what is pending, then close the connection (when it is this log's)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in (self._flusher, self._renewer):
            if task is not None and task is not self._renewer:
                await asyncio.gather(task, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self.inbox.aclose()
        try:
            await self.flush()
        finally:
            self._owners.clear()
            self._running.clear()
            if self._close_redis:
                await self.redis.aclose()


def _appends(
    log: RedisRequestLog,
    args: list[Any] | None,
    dropped: list[str],
    notes: list[tuple[list[str], list[Any]]] = [],  # noqa: B006 (never mutated)
) -> Callable[[Any], None]:
    """The commands of one flush: the append script for every request, the drops, then
    the noted client messages (after their requests' frames: a first frame sets the
    fence they are checked against)."""

    def commands(pipe: Any) -> None:
        if args is not None:
            log.evalsha(pipe, "append", [], args)
        for stream in dropped:
            pipe.delete(
                stream, f"{stream}:fence", f"{stream}:lease", f"{stream}:meta", f"{stream}:in"
            )
        for keys, note_args in notes:
            log.evalsha(pipe, "note", keys, note_args)

    return commands


class _Sink:
    """One run of a request on Redis: numbers its frames and gathers them for the
    log's next flush."""

    __slots__ = (
        "ended",
        "fenced",
        "first",
        "inputs",
        "keys",
        "kinds",
        "log",
        "meta",
        "payloads",
        "seq",
        "stream",
        "token",
    )

    def __init__(self, log: RedisRequestLog, stream: str, token: str, seq: int, meta: bytes):
        self.log = log
        self.stream = stream
        self.keys = [stream, f"{stream}:fence", f"{stream}:lease", f"{stream}:meta"]
        self.token = token
        self.seq = seq
        self.meta = meta
        self.fenced = False
        self.ended = False
        self.payloads: list[bytes] = []
        self.kinds = bytearray()
        self.first = 0
        self.inputs: list[bytes] = []

    def append(self, payload: bytes, is_text: bool, terminal: bool) -> None:
        """Gather the next frame for the log's next flush."""
        if self.fenced or self.ended:
            return
        self.seq += 1
        if not self.payloads:
            self.first = self.seq
            self.log.dirty(self)
        self.payloads.append(payload)
        if terminal:
            self.ended = True
            self.kinds += TERMINAL
        else:
            self.kinds += TEXT if is_text else BINARY

    def note(self, message: bytes) -> None:
        """Gather a client message for the log's next flush (after this run's frames)."""
        if self.fenced or self.ended:
            return
        if not self.inputs:
            self.log.noted(self)
        self.inputs.append(message)

    def clear(self) -> None:
        """The gathered frames went into a flush."""
        self.payloads = []
        self.kinds = bytearray()


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREAD's reply (RESP2 list or RESP3 dict) -> the one stream's entries."""
    if isinstance(reply, dict):
        return [e for entries in reply.values() for e in entries[0]]
    return [e for _, entries in reply for e in entries]
