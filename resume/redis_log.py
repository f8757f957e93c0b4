"""`RequestLog` on Redis Streams: a request started on one instance resumes on any,
and is taken over when the instance that ran it is gone.

Keys of one request (`{p}` = prefix + client key + request id):

    {p}          stream: one entry per flush that carried frames of the request, id
                 0-{seq of its last frame}, fields k (one kind per frame: t, b,
                 T = terminal) and p (the payload) for one frame; for more, n
                 (their byte lengths) and f (their payloads, back to back)
    {p}:fence    the token of the run allowed to write (fencing)
    {p}:lease    the same token, PX `lease`: present while its owner lives
    {p}:meta     what a takeover needs to run the request again (endpoint, first message)
    {p}:gen      INCR per run: the token's generation
    {p}:in       list: later client messages the owners noted (speak's streamed text)

Writing: appends gather in memory (a list of the payloads the socket sent); every
`flush_interval` one round trip carries one script call for every request with
frames pending, which checks each fence and XADDs each request's frames as one
entry (trimmed to the newest `max_frames` frames with `MINID ~`); a run's first
batch also sets its lease and TTLs, its terminal batch the retention TTLs (and
drops the lease). The chat hot path never waits for Redis. The owner renews the
leases and running TTLs of its running requests every lease/3, one script call.
The flush is packed with hiredis at once and sent on a pooled connection: per
request and flush, seven arguments whatever its number of frames.

Reading: XREAD BLOCK after 0-{after_seq} (the entry holding the next frame has a
higher id) and split the entries into frames; when nothing comes and the lease is gone
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
import sys
import uuid
from array import array
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from protocol.messages import ClientMessage, Inbound
from resume.inbox import Inbox, encode_message, owner_of
from resume.log import Forward, LoggedFrame, OwnerGone, ResumeGap, Takeover

log = logging.getLogger("sluice.resume")

TEXT, BINARY, TERMINAL = b"t", b"b", b"T"
"""A frame's kind in an entry's `k` field: text, binary, the terminal (text) frame."""
_BINARY, _TERMINAL = BINARY[0], TERMINAL[0]
READ_COUNT = 64
"""Entries per XREAD (an entry holds the frames of one flush)."""

# One call per flush for every request with frames pending. ARGV: maxlen retention_ms
# running_ms lease_ms, then 7 per request: stream token last kinds lengths payloads
# start. One XADD per request: entry id 0-{last} (the seq of its last frame), fields
# k (one kind per frame) and p (the payload) for one frame, as an entry of earlier
# versions (one per frame) was; for more, n (the frames' lengths, 4-byte little
# endian) and f (the payloads back to back; a new field name, so that an earlier
# version's reader fails on it instead of taking it for one frame). `start` is ''
# except for a run's first batch: 'S' followed by the run's meta. Streams are
# trimmed to the entries holding the newest `maxlen` frames (MINID ~). The running
# TTLs and the lease are set here when a run starts and then by RENEW (every
# lease/3), not per flush; the terminal frame sets the retention TTLs and drops the
# lease. Returns one 1/0 per request: 0 when its fencing token is no longer the
# current one.
APPEND = """
local maxlen, retention, running, lease = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local out = {}
for i = 5, #ARGV, 7 do
  local s, token, last, kinds = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local start = ARGV[i + 6]
  local terminal = string.byte(kinds, -1) == 84
  local ttl = running
  if terminal then ttl = retention end
  local ok = 1
  if start ~= '' then
    redis.call('DEL', s, s .. ':in')
    redis.call('SET', s .. ':fence', token, 'PX', ttl)
    if #start > 1 then redis.call('SET', s .. ':meta', string.sub(start, 2), 'PX', ttl) end
    if not terminal then redis.call('SET', s .. ':lease', token, 'PX', lease) end
  elseif redis.call('GET', s .. ':fence') ~= token then
    ok = 0
  elseif terminal then
    redis.call('DEL', s .. ':lease')
    redis.call('PEXPIRE', s .. ':fence', ttl)
    redis.call('PEXPIRE', s .. ':meta', ttl)
  end
  if ok == 1 then
    local trim = tonumber(last) - maxlen + 1
    if trim < 1 then trim = 1 end
    if ARGV[i + 4] == '' then
      redis.pcall('XADD', s, 'MINID', '~', '0-' .. trim, '0-' .. last, 'k', kinds,
                  'p', ARGV[i + 5])
    else
      redis.pcall('XADD', s, 'MINID', '~', '0-' .. trim, '0-' .. last, 'k', kinds,
                  'n', ARGV[i + 4], 'f', ARGV[i + 5])
    end
    if start ~= '' or terminal then redis.call('PEXPIRE', s, ttl) end
  end
  out[#out + 1] = ok
end
return out
"""

# ARGV: lease_ms running_ms, then per running request: stream token. Renews the
# lease and the running TTLs of every request whose fence is still its token;
# returns one 1/0 per request (0: fenced out).
RENEW = """
local lease, running = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 2 do
  local s, token = ARGV[i], ARGV[i + 1]
  if redis.call('GET', s .. ':fence') == token then
    redis.call('SET', s .. ':lease', token, 'PX', lease)
    redis.call('PEXPIRE', s, running)
    redis.call('PEXPIRE', s .. ':fence', running)
    redis.call('PEXPIRE', s .. ':meta', running)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
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
    if fields[i] == 'k' and string.byte(fields[i + 1], -1) == 84 then return nil end
  end
end
local token = ARGV[1] .. ':' .. redis.call('INCR', KEYS[5])
redis.call('SET', KEYS[2], token)
redis.call('SET', KEYS[3], token, 'PX', ARGV[2])
local last_id = '0-0'
if #last == 1 then last_id = last[1][1] end
return {token, redis.call('GET', KEYS[4]) or '', last_id}
"""

Command = tuple[Any, ...]
_pack: Callable[[Command], bytes] = pack_command
"""hiredis's RESP packer (C): a whole flush is packed without a Python step per argument."""


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
        self._behind = False
        """The timer fired while a flush was in flight: flush again once it is done."""
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
        return _Sink(self, self.stream(key, request_id), self._token(), 0, b"S" + meta)

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
        """Delete the request's stream (and its lease) with the next flush."""
        stream = self.stream(key, request_id)
        self._dropped.append(stream)
        for sink in [s for s in self._running if s.stream == stream]:
            self._running.discard(sink)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(0, self._flush_soon)

    def _flush_soon(self) -> None:
        self._timer = None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_timed())
        else:
            self._behind = True

    async def _flush_timed(self) -> None:
        """The timer's flush: one round trip for everything pending. Frames gathered
        meanwhile wait for their own timer (at most one round trip per
        `flush_interval`, so a busy instance sends more frames per round trip), or go
        at once when the round trip took longer than `flush_interval`."""
        while True:
            self._behind = False
            await self._write()
            if not self._behind:
                return

    async def flush(self) -> None:
        """Write everything pending now: one round trip (one script call for all
        requests, one XADD per request, and the drops) per batch, until nothing is
        pending."""
        while self._dirty or self._dropped or self._noted:
            await self._write()

    async def _write(self) -> None:
        """One round trip: every request's frames pending and the drops."""
        if not self._dirty and not self._dropped and not self._noted:
            return
        max_frames = self.max_frames
        sinks, self._dirty = self._dirty, []
        dropped, self._dropped = self._dropped, []
        args: list[Any] = [
            "EVALSHA",
            self._shas.get("append", ""),
            0,
            max_frames,
            self.retention_ms,
            self.running_ttl_ms,
            self.lease_ms,
        ]
        frames = size = 0
        starts: list[tuple[_Sink, bytes, int]] = []
        for sink in sinks:
            start = sink.start
            count, payloads = sink.batch(max_frames, args)
            frames += count
            size += len(payloads)
            if start:
                starts.append((sink, start, sink.seq))
        commands: list[Command] = [tuple(args)] if sinks else []
        for stream in dropped:
            commands.append(
                (
                    "DEL",
                    stream,
                    f"{stream}:fence",
                    f"{stream}:lease",
                    f"{stream}:meta",
                    f"{stream}:in",
                )
            )
        scripts = ["append"] * bool(sinks) + [""] * len(dropped)
        # noted messages after their requests' frames: a first frame sets the fence
        # they are checked against
        for command in self._notes():
            commands.append(command)
            scripts.append("note")
        try:
            results = await self._run(commands, tuple(scripts))
        except (RedisError, OSError) as error:
            self._write_failed(error, frames, starts)
            return
        self._write_worked()
        done = results[0] if sinks else []
        if isinstance(done, Exception):
            self._write_failed(done, frames, starts)
            return
        running = self._running
        for sink, result in zip(sinks, done, strict=False):
            if result == 0:
                self._fenced(sink)
            elif sink.ended:
                running.discard(sink)
            elif not sink.fenced:
                running.add(sink)
        if running:
            self._start_renewer()
        self.round_trips += 1
        self.frames_written += frames
        self.bytes_written += size

    def _notes(self) -> list[Command]:
        """The noted messages of the next flush: one `note` call per sink."""
        noted, self._noted = self._noted, []
        calls: list[Command] = []
        for sink in noted:
            messages, sink.inputs = sink.inputs, []
            if messages and not sink.fenced:
                stream = sink.stream
                calls.append(
                    (
                        "EVALSHA",
                        "",
                        2,
                        f"{stream}:fence",
                        f"{stream}:in",
                        sink.token,
                        self.running_ttl_ms,
                        *messages,
                    )
                )
        return calls

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

    async def _run(self, commands: list[Command], scripts: tuple[str, ...]) -> list[Any]:
        """`commands` in one round trip, their replies in order (an error reply as its
        exception). `scripts` names, command by command, the script of an EVALSHA
        ("" for other commands); its sha (the command's second item) is filled in here
        unless it is current: the scripts are loaded once, and again after Redis lost
        them (a restart: NOSCRIPT)."""
        if not commands:
            return []
        if not self._shas:
            await self._load_scripts()
        results = await self._exchange(self._with_shas(commands, scripts))
        if any(isinstance(r, NoScriptError) for r in results):
            self._stale = True
            await self._load_scripts()
            results = await self._exchange(self._with_shas(commands, scripts))
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, ResponseError):
                raise result
        return results

    def _with_shas(self, commands: list[Command], scripts: tuple[str, ...]) -> list[Command]:
        shas = self._shas
        out = commands
        for index, name in enumerate(scripts):
            if not name:
                continue
            command = out[index]
            if command[1] != shas[name]:
                out = list(out) if out is commands else out
                out[index] = (command[0], shas[name], *command[2:])
        return out

    async def _exchange(self, commands: list[Command]) -> list[Any]:
        """Send `commands` packed as one write on a pooled connection and read their
        replies (redis-py's pipeline packs each argument in Python; a flush has
        thousands). Connection errors are retried by the connection's policy."""
        packed = b"".join(map(_pack, commands))
        pool: Any = self.redis.connection_pool
        connection: Any = await pool.get_connection()

        async def attempt() -> list[Any]:
            await connection.send_packed_command(packed)
            replies: list[Any] = []
            try:
                for _ in commands:
                    try:
                        replies.append(await connection.read_response(disable_decoding=True))
                    except ResponseError as error:
                        replies.append(error)
            except BaseException:
                # replies left on the socket must not reach the connection's next user
                await connection.disconnect(nowait=True)
                raise
            return replies

        async def failed(error: Exception) -> None:
            await connection.disconnect()

        try:
            replies: list[Any] = await connection.retry.call_with_retry(attempt, failed)
            return replies
        finally:
            await pool.release(connection)

    def _write_failed(
        self, error: BaseException, frames: int, starts: Sequence[tuple[_Sink, bytes, int]] = ()
    ) -> None:
        # a run whose first batch was lost starts again with its next one (unless a
        # later batch already went out)
        for sink, start, seq in starts:
            if sink.seq == seq:
                sink.start = start
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
            sink.fenced = sink.closed = True
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
        """While requests run here: renew their leases and running TTLs every lease/3,
        one script call for all of them."""
        while self._running:
            await asyncio.sleep(self.lease / 3)
            sinks = [s for s in self._running if not s.ended]
            if not sinks:
                continue
            args: list[Any] = ["EVALSHA", "", 0, self.lease_ms, self.running_ttl_ms]
            for sink in sinks:
                args += (sink.stream, sink.token)
            try:
                results = await self._run([tuple(args)], ("renew",))
            except (RedisError, OSError) as error:
                self._write_failed(error, 0)
                continue
            done = results[0]
            if isinstance(done, Exception):
                self._write_failed(done, 0)
                continue
            for sink, result in zip(sinks, done, strict=False):
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
        if self._dirty or self._dropped or self._noted:
            await self.flush()
        stream = self.stream(key, request_id)
        if not await self.redis.exists(stream):
            return None
        return self._tail(stream, after_seq)

    async def _tail(self, stream: str, after_seq: int) -> AsyncIterator[LoggedFrame]:
        last = after_seq
        block = max(1, min(1000, self.lease_ms // 2))
        while True:
            # an entry holding frame `last + 1` has an id above `last`
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
                kinds: bytes = fields[b"k"]
                first = _seq(entry_id) - len(kinds) + 1
                if first > last + 1:
                    raise ResumeGap(f"frames {last + 1}..{first - 1} are no longer kept")
                payloads = _payloads(fields, len(kinds))
                for index in range(last + 1 - first, len(kinds)):
                    last = first + index
                    kind = kinds[index]
                    terminal = kind == _TERMINAL
                    yield LoggedFrame(last, payloads[index], kind != _BINARY, terminal)
                    if terminal:
                        return

    async def take_over(self, key: str, request_id: str) -> Takeover | None:
        """Run the request here if its owner's lease is gone: exactly one caller of all
        instances wins (a Redis script); None for the others, or when it finished."""
        stream = self.stream(key, request_id)
        command = (
            "EVALSHA",
            "",
            5,
            stream,
            f"{stream}:fence",
            f"{stream}:lease",
            f"{stream}:meta",
            f"{stream}:gen",
            self.instance,
            self.lease_ms,
        )
        results = await self._run([command], ("take_over",))
        won: Any = results[0]
        if isinstance(won, Exception):
            raise won
        if not won:
            return None
        token, meta, last_id = won
        seq = _seq(last_id)
        raw: Any = await self.redis.xrange(stream, min="-", max=f"0-{seq}")
        inputs: Any = await self.redis.lrange(f"{stream}:in", 0, -1)
        frames: list[LoggedFrame] = []
        for entry_id, fields in raw:
            kinds = fields[b"k"]
            first = _seq(entry_id) - len(kinds) + 1
            for index, payload in enumerate(_payloads(fields, len(kinds))):
                frames.append(LoggedFrame(first + index, payload, kinds[index] != _BINARY, False))
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


class _Sink:
    """One run of a request on Redis: gathers its frames (the payloads the socket
    sent, as they are) for the log's next flush, which numbers them."""

    __slots__ = (
        "binary",
        "closed",
        "ended",
        "fenced",
        "inputs",
        "log",
        "pending",
        "seq",
        "start",
        "stream",
        "token",
    )

    def __init__(self, log: RedisRequestLog, stream: str, token: str, seq: int, start: bytes):
        self.log = log
        self.stream = stream
        self.token = token
        self.seq = seq
        """The seq of the last frame handed to a flush."""
        self.start = start
        """b"S" + meta until the run's first batch is flushed (a new run), then b""."""
        self.fenced = False
        self.ended = False
        self.closed = False
        """Ended or fenced: nothing more is recorded."""
        self.pending: list[bytes] = []
        self.binary: list[int] | None = None
        """Indexes in `pending` of binary frames (rare: speak's audio)."""
        self.inputs: list[bytes] = []
        """Client messages noted for the log's next flush."""

    def append(self, payload: bytes, is_text: bool, terminal: bool) -> None:
        """Gather the next frame for the log's next flush."""
        if self.closed:
            return
        pending = self.pending
        if not pending:
            self.log.dirty(self)
        if not is_text:
            if self.binary is None:
                self.binary = []
            self.binary.append(len(pending))
        pending.append(payload)
        if terminal:
            self.ended = self.closed = True

    def note(self, message: bytes) -> None:
        """Gather a client message for the log's next flush (after this run's frames)."""
        if self.closed:
            return
        if not self.inputs:
            self.log.noted(self)
        self.inputs.append(message)

    def batch(self, max_frames: int, args: list[Any]) -> tuple[int, bytes]:
        """Add this run's gathered frames to a flush's `args` (one entry: see APPEND)
        and forget them; (frames numbered, payload bytes sent). Of more than
        `max_frames` frames only the newest are sent (the stream keeps no more)."""
        pending, self.pending = self.pending, []
        binary, self.binary = self.binary, None
        count = len(pending)
        self.seq += count
        if count > max_frames:
            cut = count - max_frames
            pending = pending[cut:]
            binary = [i - cut for i in binary if i >= cut] if binary else None
        kept = len(pending)
        if kept == 1:
            kinds = TERMINAL if self.ended else (BINARY if binary else TEXT)
            lengths = b""
            payloads = pending[0]
        else:
            marks = bytearray(TEXT * kept)
            if binary:
                for index in binary:
                    marks[index] = _BINARY
            if self.ended:
                marks[-1] = _TERMINAL
            kinds = bytes(marks)
            sizes = array("I", map(len, pending))
            if _SWAP:
                sizes.byteswap()
            lengths = sizes.tobytes()
            payloads = b"".join(pending)
        args += (self.stream, self.token, self.seq, kinds, lengths, payloads, self.start)
        self.start = b""
        return count, payloads


_SWAP = sys.byteorder != "little"
"""Frame lengths are stored little endian."""


def _seq(entry_id: bytes) -> int:
    """An entry id `0-{seq}` -> seq."""
    return int(entry_id.split(b"-", 1)[1])


def _payloads(fields: dict[bytes, bytes], count: int) -> list[bytes]:
    """The `count` payloads of one entry (see APPEND)."""
    if count == 1:
        return [fields[b"p"]]
    blob = fields[b"f"]
    sizes = array("I")
    sizes.frombytes(fields[b"n"])
    if _SWAP:
        sizes.byteswap()
    out = []
    start = 0
    for size in sizes:
        out.append(blob[start : start + size])
        start += size
    return out


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREAD's reply (RESP2 list or RESP3 dict) -> the one stream's entries."""
    if isinstance(reply, dict):
        return [e for entries in reply.values() for e in entries[0]]
    return [e for _, entries in reply for e in entries]
