"""One websocket: its reader (the handler task), its pipeline and its writer.

websocket frames ─► parse ─► Subject[Inbound] ─► pipeline ─► encode ─►
  (nothing queued, writer idle, transport buffer small) ─► transport, at once
  (otherwise) ─► OutboundQueue (bounded) ─► writer task ─► websocket

Only the handler task reads the socket. Frames leave in order through one of two
doors that are never open together: written straight to the transport while
nothing waits (the common case, one loop turn sooner), or queued for the writer
task, which alone awaits a slow peer (aiohttp's drain) and keeps the overflow
policy below.
When the client goes away the inbound stream completes, which disposes every
request in flight (cancelling their provider calls).

Limits: a text or binary frame over its size limit closes the socket with 1009
(aiohttp's `max_msg_size` does the same for frames over the larger limit).

Slow consumers: frames are never dropped. When the bytes queued for a client
that does not keep up pass `max_queued_bytes`, the socket is cut: every request
is disposed (provider work cancelled), the queue is cleared, the writer stops,
a 1008 close is attempted for `close_timeout` seconds and then the connection
is aborted, so a client that never reads holds nothing for long.

Drain: `drain()` closes an idle socket at once (1001) and a busy one as soon as
its last request ends; `end_now()` (the grace deadline) stops every request,
sends each its terminal `shutting_down` error, flushes, and closes with 1001.

Accounting: the session sees every request start (`on_active_change`) and every
frame, so it keeps each request's `RequestTelemetry` (outcome, first output,
intervals) for any endpoint; `request_telemetry(id)` hands it to pipelines for
their provider attempts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web
from reactivex import Observable, abc
from reactivex.disposable import SerialDisposable
from reactivex.subject import Subject

from observability.telemetry import ABORTED, RequestTelemetry, Telemetry
from operators.instrument import is_output_frame, model_of, outcome_of
from operators.scheduling import seconds
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.jsoncodec import dumps, loads
from protocol.messages import ClientMessage, Inbound, encode_binary, parse_binary, parse_text
from providers.types import FinishReason
from resume.log import FrameSink, OwnerGone, RequestLog, ResumeGap, Takeover
from resume.takeover import (
    Resumed,
    ResumedAnswer,
    chat_answer_so_far,
    listen_so_far,
    speak_text_so_far,
    speech_so_far,
)
from transport.frame_writer import SentCounts, ws_frame
from transport.outbound import OutboundQueue

log = logging.getLogger("sluice.socket")

RESUME = "resume"
RESTART = 1012
"""Close code for a drain in `restart` mode: reconnect and resume (RFC 6455 registry)."""

Pipeline = Callable[[Observable[Inbound]], Observable[Frame]]

FLUSH_SECONDS = 5.0
DIRECT_WRITE_LIMIT = 64 * 1024
"""Bytes in the transport's buffer above which frames wait for the writer task."""


class MessageGate(Protocol):
    """Awaited before a text message enters the pipeline, told when it went through
    (`security.request_gate.SharedRateGate`: a shared rate-limit token)."""

    async def before(self, msg: Inbound, active: Mapping[str, ClientMessage]) -> None:
        """`msg` is next; `active` are the requests in flight."""
        ...

    def after(self) -> None:
        """The pipeline has taken `msg`."""
        ...


def encode_frame(frame: Frame) -> tuple[bytes, bool]:
    """A frame as the websocket payload and whether it is text: compact UTF-8 JSON
    (True), or id-prefixed audio (False)."""
    if isinstance(frame.data, bytes):
        assert frame.request_id is not None
        return encode_binary(frame.request_id, frame.data), False
    return dumps(frame.data), True


def _error_name(frame: Frame) -> str | None:
    data = frame.data
    if isinstance(data, bytes) or data.get("type") != "error":
        return None
    error = data.get("error")
    return str(error.get("name")) if isinstance(error, dict) else ErrorName.UNKNOWN_ERROR


def _utf8_len_over(text: str, limit: int) -> bool:
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8")) > limit


class _Out:
    """What the session counts for one request: its `seq`, where its frames are
    recorded, and the first audio frame since its last `segment` event."""

    __slots__ = ("audio_from", "seq", "sink")

    def __init__(self, sink: FrameSink | None) -> None:
        self.sink = sink
        self.seq = 0
        self.audio_from = 0


def _segment_seqs(out: _Out, data: dict[str, Any]) -> None:
    """A speak `segment` event names the seqs of the audio frames sent since the last."""
    segment = data.get("segment")
    if isinstance(segment, dict):
        first = out.audio_from
        segment["audio_seq"] = [first, out.seq - 1] if first else None
    out.audio_from = 0


def _speak_resumable(body: dict[str, Any], client_seq: int, recorded_seq: int) -> bool:
    """Whether a speak request taken over can be spoken again: its text so far is
    recorded (the `speak` message's, then each `text` message noted as it came) and
    the client saw no frame the log missed. (The pipeline picks how by the format:
    pcm_s16le and wav go on from the first unspoken sentence, compressed ones restart.)"""
    return isinstance(body.get("text", ""), str) and client_seq <= recorded_seq


TEXT = "text"
"""speak's later text message: noted in the request log for a takeover."""


def _text_note(body: dict[str, Any]) -> dict[str, Any]:
    """What a takeover needs of a `text` message: its text and whether it is the last."""
    return {"text": body.get("text"), "final": body.get("final", False)}


class SocketSession:
    """Runs one accepted websocket until either side closes it.

    Required: the socket, its endpoint's default message type, the scheduler,
    the outbound byte bound, router id and a label for logs. Optional: per-type
    frame limits, `telemetry` (metrics, traces, request logs), the caller's
    `key_id`, the connection's `transport` (to abort a dead peer), the
    `close_timeout` for a slow consumer's close, and `redact` for error frames.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        default_type: str,
        scheduler: abc.SchedulerBase,
        max_queued_bytes: int,
        router_id: str,
        label: str,
        endpoint: str | None = None,
        max_text_bytes: int | None = None,
        max_binary_bytes: int | None = None,
        telemetry: Telemetry | None = None,
        key_id: str | None = None,
        transport: asyncio.Transport | None = None,
        close_timeout: float = 2.0,
        redact: Callable[[str], str] | None = None,
        request_log: RequestLog | None = None,
        detached_timeout: float = 300.0,
        gate: MessageGate | None = None,
        client_resumes: bool = False,
    ) -> None:
        self.ws = ws
        self.client_resumes = client_resumes
        """The client said it resumes (`?resume=1`): a drain may close it with 1012."""
        self._default_type = default_type
        self._scheduler = scheduler
        self.queue = OutboundQueue(max_queued_bytes)
        self.router_id = router_id
        self._label = label
        self.endpoint = endpoint or label.split(":", 1)[0]
        self._max_text = max_text_bytes
        self._max_binary = max_binary_bytes
        self._telemetry = telemetry
        self.key_id = key_id
        self._transport = transport
        self._close_timeout = close_timeout
        self._redact = redact
        self._log = request_log
        self._log_key = key_id or ""
        self._detached_timeout = detached_timeout
        self._out: dict[str, _Out] = {}
        self._is_speak = self.endpoint == "speak"
        self._notes_text = self._is_speak and bool(getattr(request_log, "takes_over", False))
        """Speak on a log that takes over: `text` messages are noted as they come."""
        self._early: dict[str, list[dict[str, Any]]] = {}
        """`text` messages of a request before its first frame (they go in its meta)."""
        self._owned: set[str] = set()
        self._relays: dict[str, asyncio.Task[None]] = {}
        self._relaying: asyncio.Task[None] | None = None
        self._held: dict[str, list[ClientMessage]] = {}
        """Messages for a request being resumed here that no instance took: they go to
        the request if this socket takes it over, else get `request_not_found`."""
        self._resumed: dict[str, Resumed] = {}
        self._client_closed = False
        self.detached = False
        self._detached_done = asyncio.Event()
        self._detach_timer: asyncio.TimerHandle | None = None
        self._gate = gate
        self._inbound: Subject[Inbound] = Subject()
        self._subscription = SerialDisposable()
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._draining = False
        self.close_reason: str | None = None
        self.active: Mapping[str, ClientMessage] = {}
        self._requests: dict[str, RequestTelemetry] = {}
        self.closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._writer_busy = False
        metrics = telemetry.metrics if telemetry is not None else None
        self._latency = metrics.chunk_latency.labels(self.endpoint) if metrics else None
        self._sent = (
            SentCounts(
                metrics.frames_sent.labels(self.endpoint, "text"),
                metrics.frames_sent.labels(self.endpoint, "binary"),
                metrics.bytes_sent.labels(self.endpoint),
            )
            if metrics
            else SentCounts()
        )

    # ---- requests ----------------------------------------------------------------

    def on_active_change(self, active: Mapping[str, ClientMessage]) -> None:
        """Hears the requests in flight; a draining socket closes when none is left."""
        self.active = active
        telemetry = self._telemetry
        if telemetry is not None:
            requests = self._requests
            if len(active) > len(requests):
                for request_id in active:
                    if request_id not in requests:
                        requests[request_id] = telemetry.request(
                            self.endpoint, self.router_id, request_id, key_id=self.key_id
                        )
            elif len(active) < len(requests):
                for request_id in [r for r in requests if r not in active]:
                    requests.pop(request_id).finish(ABORTED)
        request_log = self._log
        if request_log is not None:
            owned = self._owned
            if len(active) > len(owned):
                for request_id in active:
                    if request_id not in owned:
                        owned.add(request_id)
                        request_log.own(self._log_key, request_id, self._deliver)
            elif len(active) < len(owned):
                for request_id in [r for r in owned if r not in active]:
                    owned.discard(request_id)
                    request_log.own(self._log_key, request_id, None)
                    self._early.pop(request_id, None)
        if self.detached:
            if not active:
                self._loop.call_soon(self._end_detached)
        elif self._draining and not active:
            self._close_soon(WSCloseCode.GOING_AWAY, "server draining", "draining")

    def request_telemetry(self, request_id: str) -> RequestTelemetry | None:
        """The telemetry of an admitted request in flight on this socket, or None."""
        return self._requests.get(request_id)

    def _now(self) -> float:
        return seconds(self._scheduler)

    def _finish_all(self, outcome: str, error: str | None = None) -> None:
        requests = list(self._requests.values())
        self._requests.clear()
        for request in requests:
            request.finish(outcome, error=error)

    def _account(self, frame: Frame, telemetry: Telemetry) -> None:
        request_id = frame.request_id
        request = self._requests.get(request_id) if request_id is not None else None
        if request is None:
            name = _error_name(frame)
            if name is not None:  # refused at admission, or a bad frame
                telemetry.rejected(self.endpoint, self.router_id, name, request=frame.terminal)
            return
        if is_output_frame(frame):
            if not request.model:
                named = model_of(frame)
                if named is not None:
                    request.answered_by(*named)
            request.output()
        if frame.terminal:
            del self._requests[request.request_id]
            outcome, error = outcome_of(frame, bool(request.model))
            request.finish(outcome, error=error)

    # ---- the socket --------------------------------------------------------------

    async def run(self, pipeline: Pipeline) -> None:
        """Read until the socket closes; then stop the pipeline and the writer."""
        self._writer = asyncio.create_task(self._write())
        self._subscription.disposable = pipeline(self._inbound).subscribe(
            self._enqueue, self._pipeline_failed, self.queue.close, scheduler=self._scheduler
        )
        ended = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
        try:
            while (msg := await self.ws.receive()).type not in ended:
                if self._closing:
                    continue
                if msg.type is WSMsgType.TEXT:
                    if self._max_text is not None and _utf8_len_over(msg.data, self._max_text):
                        self._too_big("text")
                        continue
                    parsed = parse_text(msg.data, self._default_type)
                    gate = self._gate
                    if gate is None or self._is_resume_traffic(parsed):
                        self._receive(parsed)
                    else:
                        await gate.before(parsed, self.active)
                        self._receive(parsed)
                        gate.after()
                elif msg.type is WSMsgType.BINARY:
                    if self._max_binary is not None and len(msg.data) > self._max_binary:
                        self._too_big("binary")
                        continue
                    self._receive(parse_binary(msg.data))
                elif msg.type is WSMsgType.ERROR:
                    # aiohttp's own max_msg_size check ends the socket with 1009
                    if getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                        self.close_reason = "frame_too_large"
            # a close frame the client sent on its own: it is done with its requests
            self._client_closed = msg.type is WSMsgType.CLOSE and not self._closing
        finally:
            for relay in self._relays.values():
                relay.cancel()
            if self._may_detach():
                self._detach()
            else:
                self._inbound.on_completed()
                self._subscription.dispose()
                self._disown()
                self._finish_all(ABORTED)
            self.queue.close()
            await self._stop_writer()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._count_close()
            self.closed.set()

    def _is_resume_traffic(self, msg: Inbound) -> bool:
        """A `resume`, or a message for a request resumed here: it starts no request
        on this socket (no rate-limit token is taken for it)."""
        return (
            self._log is not None
            and isinstance(msg, ClientMessage)
            and (msg.type == RESUME or msg.request_id in self._relays)
        )

    def _receive(self, msg: Inbound) -> None:
        """A parsed client message: `resume`, one for a request resumed here (to its
        running owner), or one for this socket's pipeline."""
        if self._log is not None and isinstance(msg, ClientMessage):
            if msg.type == RESUME:
                self._start_relay(msg)
                return
            if msg.request_id in self._relays:
                self._forward(msg)
                return
        self._deliver(msg)

    def _deliver(self, msg: Inbound) -> None:
        """A message for this socket's pipeline (its own, or relayed to a request it
        runs); speak's `text` is noted in the request log on the way (for a takeover)."""
        if (
            self._notes_text
            and isinstance(msg, ClientMessage)
            and msg.type == TEXT
            and msg.request_id in self.active
        ):
            self._note(msg)
        self._inbound.on_next(msg)

    def _note(self, msg: ClientMessage) -> None:
        """Record a `text` message of a running speak request: with its frames once it
        has one, else in the meta its first frame records."""
        note = _text_note(msg.body)
        out = self._out.get(msg.request_id)
        if out is not None and out.sink is not None:
            out.sink.note(dumps(note))
        else:
            self._early.setdefault(msg.request_id, []).append(note)

    # ---- resume --------------------------------------------------------------------

    def _start_relay(self, msg: ClientMessage) -> None:
        request_id = msg.request_id
        after = msg.body.get("after_seq", 0)
        if type(after) is not int or after < 0:
            self._send_error(
                msg, ErrorName.INVALID_REQUEST, "after_seq must be an integer >= 0", "error"
            )
            return
        if request_id in self._relays or request_id in self.active:
            self._send_error(
                msg,
                ErrorName.DUPLICATE_REQUEST_ID,
                f"request {request_id!r} is already in flight on this socket; "
                "this resume was ignored",
                None,
            )
            return
        task = self._loop.create_task(self._relay_safely(msg, after))
        self._relays[request_id] = task
        task.add_done_callback(lambda _: self._relay_ended(request_id))

    def _relay_ended(self, request_id: str) -> None:
        """A resume's relay is over: messages held for a takeover that did not happen
        here are answered `request_not_found`."""
        self._relays.pop(request_id, None)
        for held in self._held.pop(request_id, ()):
            if request_id in self.active:
                self._deliver(held)
            else:
                self._not_reached(held)

    async def _relay_safely(self, msg: ClientMessage, after: int) -> None:
        """`_relay`, whose failure (Redis gone mid-resume, a bug) ends the resume with
        an error frame instead of leaving the client waiting."""
        try:
            await self._relay(msg, after)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.error(
                "resume failed",
                exc_info=error,
                extra={
                    "socket": self._label,
                    "request_id": msg.request_id,
                    "router": self.router_id,
                },
            )
            self._send_error(
                msg,
                ErrorName.UNKNOWN_ERROR,
                f"internal error while resuming: {type(error).__name__}; resume again",
                "error",
            )

    async def _relay(self, msg: ClientMessage, after: int) -> None:
        """Send the request's recorded frames after `after`, then its live ones; take
        the request over when the instance that ran it is gone."""
        request_log = self._log
        assert request_log is not None
        request_id = msg.request_id
        tail = await request_log.open(self._log_key, request_id, after)
        if tail is None:
            self._send_error(
                msg,
                ErrorName.REQUEST_NOT_FOUND,
                f"request {request_id!r} is not known (finished longer ago than the "
                "retention, never started, or started with another key)",
                "error",
            )
            return
        log.info(
            "request resumed",
            extra={"socket": self._label, "request_id": request_id, "after_seq": after},
        )
        last = after
        while tail is not None:
            try:
                async for frame in tail:
                    self._send_raw(frame.payload, frame.is_text)
                    last = frame.seq
                    if frame.terminal:
                        return
                break
            except ResumeGap as gap:
                self._send_error(msg, ErrorName.RESUME_GAP, f"cannot resume: {gap}", "error")
                return
            except OwnerGone:
                takeover = await request_log.take_over(self._log_key, request_id)
                if takeover is not None:
                    self._adopt(msg, takeover, after)
                    return
                # another instance won: read what it sends
                tail = await request_log.open(self._log_key, request_id, last)
        self._send_error(
            msg,
            ErrorName.REQUEST_NOT_FOUND,
            f"request {request_id!r} ended without a terminal frame "
            "(its socket was closed by the client, which cancels it)",
            "error",
        )

    def _meta(self, request_id: str) -> bytes:
        """What another instance needs to run the request again (Redis logs only)."""
        first = self.active.get(request_id)
        early = self._early.pop(request_id, None) if self._early else None
        if first is None or not getattr(self._log, "takes_over", False):
            return b""
        meta: dict[str, Any] = {
            "endpoint": self.endpoint,
            "router": self.router_id,
            "type": first.type,
            "body": first.body,
        }
        if early:
            meta["inputs"] = early
        return dumps(meta)

    def _adopt(self, msg: ClientMessage, takeover: Takeover, client_seq: int) -> None:
        """Run a request taken over from a gone instance on this socket: chat goes on
        from its recorded answer (or restarts, when the client saw more than was
        recorded); speak speaks the text received so far (its `speak` and noted `text`
        messages) again from the first sentence not spoken whole (a compressed format
        from the first: `pipelines.speak`) and takes further `text` here; what cannot
        be run again ends with `request_lost`; listen starts a fresh run on the same
        timeline, fed by the audio the client resends behind `audio_offset`."""
        request_log = self._log
        assert request_log is not None
        request_id = msg.request_id
        sink = request_log.resume_sink(self._log_key, request_id, takeover)
        # frames go on after what the client saw (a restart covers the difference)
        out = _Out(sink)
        out.seq = max(takeover.seq, client_seq)
        self._out[request_id] = out
        try:
            meta = loads(takeover.meta)
        except ValueError:
            meta = None
        body = meta.get("body") if isinstance(meta, dict) else None
        resumed: Resumed | None = None
        if (
            not isinstance(meta, dict)
            or meta.get("endpoint") != self.endpoint
            or not isinstance(body, dict)
        ):
            resumed = None
        elif self.endpoint == "chatStream":
            text, model_id = chat_answer_so_far(takeover.frames)
            resumed = ResumedAnswer(text, model_id, client_seq > takeover.seq)
        elif self.endpoint == "speak" and _speak_resumable(body, client_seq, takeover.seq):
            early = meta.get("inputs")
            if not isinstance(early, list):
                early = []
            noted = [dumps(n) for n in early if isinstance(n, dict)]
            body = speak_text_so_far(body, [*noted, *takeover.inputs])
            resumed = speech_so_far(takeover.frames, request_id)
        elif self.endpoint == "listen" and client_seq <= takeover.seq:
            resumed = listen_so_far(takeover.frames)
        if resumed is None:
            frames = FrameFactory(request_id, self.router_id, msg.metadata, self._now)
            self._enqueue(
                frames.error(
                    ErrorName.REQUEST_LOST,
                    "the instance that ran this request is gone and this endpoint cannot "
                    "run it again from where it stopped; send it again",
                )
            )
            return
        assert isinstance(meta, dict) and isinstance(body, dict)
        self._resumed[request_id] = resumed
        log.info(
            "running a request taken over",
            extra={
                "socket": self._label,
                "request_id": request_id,
                "router": self.router_id,
                "endpoint": self.endpoint,
                "recorded_seq": takeover.seq,
                "client_seq": client_seq,
            },
        )
        self._inbound.on_next(ClientMessage(request_id, str(meta.get("type")), body))
        for held in self._held.pop(request_id, ()):
            self._deliver(held)

    def take_resumed(self, request_id: str) -> Resumed | None:
        """The answer so far of a request this socket took over (once), else None."""
        return self._resumed.pop(request_id, None)

    def _forward(self, msg: ClientMessage) -> None:
        """A message for a request resumed on this socket: to its owner in this process,
        else relayed to the instance that runs it (in the order the client sent them)."""
        request_log = self._log
        assert request_log is not None
        relaying = self._relaying
        # behind messages still being relayed, to keep the client's order
        if (relaying is None or relaying.done()) and request_log.forward(
            self._log_key, msg.request_id, msg
        ):
            return
        task = self._loop.create_task(self._relay_message(request_log, msg, self._relaying))
        self._relaying = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay_message(
        self, request_log: RequestLog, msg: ClientMessage, before: asyncio.Task[None] | None
    ) -> None:
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)
        try:
            reached = await request_log.relay(self._log_key, msg.request_id, msg)
        except Exception as error:  # Redis down: the message cannot reach the owner
            log.warning(
                "a message for a request on another instance could not be relayed",
                extra={
                    "socket": self._label,
                    "request_id": msg.request_id,
                    "router": self.router_id,
                    "error": repr(error),
                },
            )
            reached = False
        if reached:
            return
        if msg.request_id in self._relays:  # the resume may yet take it over here
            self._held.setdefault(msg.request_id, []).append(msg)
        elif msg.request_id in self.active:  # taken over by this socket meanwhile
            self._deliver(msg)
        else:
            self._not_reached(msg)

    def _not_reached(self, msg: ClientMessage) -> None:
        self._send_error(
            msg,
            ErrorName.REQUEST_NOT_FOUND,
            f"request {msg.request_id!r} runs on no instance this {msg.type!r} message "
            "could reach (it ended, or its instance is gone and it is being taken over)",
            None,
        )

    def _send_error(
        self, msg: ClientMessage, name: str, message: str, finish_reason: FinishReason | None
    ) -> None:
        """An error about a resume (no `seq`: it is not one of the request's frames)."""
        frame = FrameFactory(msg.request_id, self.router_id, msg.metadata, self._now).error(
            name, message, finish_reason=finish_reason
        )
        self._send_raw(*self._encode(frame))

    def _send_raw(self, payload: bytes, is_text: bool) -> None:
        """Send an already encoded frame (a resumed request's) in order with the rest."""
        if self.detached:
            return
        if self._write_now(payload, is_text):
            return
        if not self.queue.put(payload, is_text, self._loop.time()):
            if self.queue.overflowed:
                self._on_overflow()

    def _may_detach(self) -> bool:
        """Whether the requests in flight run on without the socket: it was lost (no
        close frame from the client) or closed by a `restart` drain, and a request
        log keeps their frames for a resume."""
        return (
            self._log is not None
            and bool(self.active)
            and not self._client_closed
            and self.close_reason not in ("slow_consumer", "frame_too_large", "draining")
        )

    def _detach(self) -> None:
        self.detached = True
        self._detach_timer = self._loop.call_later(self._detached_timeout, self._detach_expired)
        log.info(
            "socket gone: its requests run on, to be resumed",
            extra={
                "socket": self._label,
                "requests": len(self.active),
                "key_id": self.key_id,
                "router": self.router_id,
            },
        )

    def _detach_expired(self) -> None:
        if self.active:
            log.warning(
                "detached requests ran past resume.detached_timeout: ending them",
                extra={"socket": self._label, "requests": sorted(self.active)},
            )
            self.end_now(self._now)
        self._end_detached()

    def _end_detached(self) -> None:
        if self._detached_done.is_set():
            return
        if self._detach_timer is not None:
            self._detach_timer.cancel()
        self._inbound.on_completed()
        self._subscription.dispose()
        self._disown()
        self._finish_all(ABORTED)
        self._detached_done.set()

    def _disown(self) -> None:
        request_log = self._log
        if request_log is None:
            return
        for request_id in self._owned:
            request_log.own(self._log_key, request_id, None)
            # ended without a terminal frame (cancelled by the socket's close)
            request_log.drop(self._log_key, request_id)
        self._owned.clear()

    async def wait_detached(self) -> None:
        """Return once no request of this (closed) socket runs on detached."""
        if self.detached:
            await self._detached_done.wait()

    def _count_close(self) -> None:
        reason = self.close_reason
        if reason is None:
            reason = "frame_too_large" if self.ws.close_code == 1009 else "client"
        metrics = self._telemetry.metrics if self._telemetry is not None else None
        if metrics is not None:
            metrics.socket_closes.labels(self.endpoint, reason).inc()
        log.debug(
            "socket closed",
            extra={"socket": self._label, "reason": reason, "code": self.ws.close_code},
        )

    def _too_big(self, kind: str) -> None:
        limit = self._max_text if kind == "text" else self._max_binary
        log.info(
            "frame too large: closing with 1009",
            extra={"socket": self._label, "kind": kind, "limit": limit, "key_id": self.key_id},
        )
        self._subscription.dispose()
        self._close_soon(
            WSCloseCode.MESSAGE_TOO_BIG,
            f"{kind} frame larger than {limit} bytes",
            "frame_too_large",
            flush=False,
        )

    def drain(self, restart: bool = False) -> None:
        """Accept no new requests (the admission says so); close 1001 once idle.

        With `restart` (and a request log) a busy socket is closed at once with 1012:
        its requests run on detached and the client resumes them elsewhere.
        """
        self._draining = True
        if not self.active:
            self._close_soon(WSCloseCode.GOING_AWAY, "server draining", "draining")
        elif restart and self._log is not None:
            self._close_soon(RESTART, "server restarting: reconnect and resume", "restart")

    def end_now(self, clock: Callable[[], float]) -> None:
        """Grace is over: end every request with `shutting_down`, flush, close 1001."""
        active = dict(self.active)
        self._subscription.dispose()
        for request_id, first in active.items():
            frames = FrameFactory(request_id, self.router_id, first.metadata, clock)
            self._enqueue(
                frames.error(
                    ErrorName.SHUTTING_DOWN,
                    "this instance is shutting down; send the request again on a new connection",
                )
            )
        self.active = {}
        self._finish_all(ABORTED)
        self._close_soon(WSCloseCode.GOING_AWAY, "server shutting down", "draining")

    def _close_soon(self, code: int, message: str, reason: str, *, flush: bool = True) -> None:
        if self._closing:
            return
        self._closing = True
        self.close_reason = reason
        task = asyncio.get_running_loop().create_task(self._flush_and_close(code, message, flush))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_and_close(self, code: int, message: str, flush: bool) -> None:
        writer = self._writer
        if flush:
            self.queue.close()
            if writer is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(writer), FLUSH_SECONDS)
                except (TimeoutError, asyncio.CancelledError):
                    pass
        else:
            # The writer may be waiting for a peer that never reads; it is not cancelled
            # here (it shares aiohttp's drain future with the close below) but ends
            # when the close times out or the connection is aborted.
            self.queue.clear()
        if not self.ws.closed:
            try:
                await asyncio.wait_for(
                    self.ws.close(code=code, message=message.encode("utf-8")), self._close_timeout
                )
            except (TimeoutError, ConnectionError, RuntimeError):
                pass
            except asyncio.CancelledError:
                # aiohttp re-raises a cancelled shared drain future; only a real
                # cancellation of this task stops here
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
        # A peer that does not read keeps a gracefully closing transport open forever
        # (its unsent bytes never drain): a cut socket, or one with bytes still
        # stuck after the close, is aborted.
        transport = self._transport
        if transport is not None and (not flush or transport.get_write_buffer_size() > 0):
            self._abort(transport)

    def _abort(self, transport: asyncio.Transport) -> None:
        """Drop the connection without waiting for the peer (it is not reading)."""
        log.debug(
            "aborting the connection",
            extra={"socket": self._label, "key_id": self.key_id},
        )
        transport.abort()

    def _encode(self, frame: Frame) -> tuple[bytes, bool]:
        try:
            payload, is_text = encode_frame(frame)
        except (TypeError, ValueError, RecursionError) as error:
            log.error(
                "a frame could not be encoded",
                exc_info=error,
                extra={"socket": self._label, "request_id": frame.request_id},
            )
            replacement = FrameFactory(frame.request_id, self.router_id, None, self._now).error(
                ErrorName.UNKNOWN_ERROR,
                "internal error: a frame could not be encoded",
                finish_reason="error" if frame.terminal else None,
            )
            if isinstance(frame.data, dict) and "seq" in frame.data:
                assert isinstance(replacement.data, dict)
                replacement.data["seq"] = frame.data["seq"]
            payload, is_text = encode_frame(replacement)
        if self._redact is not None and is_text and _error_name(frame):
            payload = self._redact(payload.decode("utf-8")).encode("utf-8")
        return payload, is_text

    def _stamp(self, request_id: str, frame: Frame) -> _Out:
        """Number `frame` within its request (`seq`, from 1; binary frames count too)."""
        outs = self._out
        out = outs.get(request_id)
        if out is None:
            request_log = self._log
            sink = (
                None
                if request_log is None
                else request_log.begin(self._log_key, request_id, self._meta(request_id))
            )
            out = _Out(sink)
            outs[request_id] = out
        out.seq += 1
        if frame.terminal:
            del outs[request_id]
        data = frame.data
        if isinstance(data, dict):
            data["seq"] = out.seq
            if self._is_speak and data.get("type") == "segment":
                _segment_seqs(out, data)
        elif out.audio_from == 0:
            out.audio_from = out.seq
        return out

    def _enqueue(self, frame: Frame) -> None:
        request_id = frame.request_id
        out = self._stamp(request_id, frame) if request_id is not None else None
        telemetry = self._telemetry
        if telemetry is not None:
            self._account(frame, telemetry)
        payload, is_text = self._encode(frame)
        if out is not None and out.sink is not None:
            out.sink.append(payload, is_text, frame.terminal)
        if self.detached:
            return
        if self._write_now(payload, is_text):
            return
        if not self.queue.put(payload, is_text, self._loop.time()):
            if self.queue.overflowed:
                self._on_overflow()

    def _on_overflow(self) -> None:
        if self._closing:
            return
        log.warning(
            "slow consumer: outbound queue passed its bound; closing the socket",
            extra={
                "socket": self._label,
                "queued_bytes": self.queue.queued_bytes,
                "requests": len(self.active),
                "key_id": self.key_id,
            },
        )
        self._subscription.dispose()
        self._finish_all(ABORTED, ErrorName.SLOW_CONSUMER)
        self._close_soon(
            WSCloseCode.POLICY_VIOLATION,
            "slow consumer: outbound queue full",
            ErrorName.SLOW_CONSUMER,
            flush=False,
        )

    def _pipeline_failed(self, error: Exception) -> None:
        log.error("socket pipeline failed", exc_info=error, extra={"socket": self._label})
        self.queue.close()

    def _write_now(self, payload: bytes, is_text: bool) -> bool:
        """Write one frame straight to the transport when nothing is ahead of it.

        The writer task exists for the slow path (a backlog, a peer that reads slowly:
        aiohttp's send waits for the buffer to drain). A frame that finds the queue
        empty, the writer idle and the transport's buffer under `DIRECT_WRITE_LIMIT`
        is written here, one loop turn sooner and without waking the writer; order
        holds because any frame behind a queued one is queued too.
        """
        transport = self._transport
        if (
            transport is None
            or self._writer_busy
            or self._closing
            or len(self.queue)
            or transport.is_closing()
            or transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT
        ):
            return False
        transport.write(ws_frame(payload, is_text))
        self._sent.add(len(payload), is_text)
        if self._latency is not None:
            self._latency.observe(0.0)
        return True

    def flush_counts(self) -> None:
        """Add the frames and bytes written since the last flush to the metrics."""
        self._sent.flush()

    async def _write(self) -> None:
        """The socket's one writer task: each wake-up sends every queued frame (with
        aiohttp's send, which waits while the peer is slow to read), then updates the
        metrics once for the batch."""
        loop = self._loop
        queue = self.queue
        send = self.ws.send_frame
        text, binary = WSMsgType.TEXT, WSMsgType.BINARY
        latency = self._latency
        sent = self._sent
        try:
            while (batch := await queue.get_all()) is not None:
                self._writer_busy = True
                for payload, is_text, _ in batch:
                    await send(payload, text if is_text else binary)
                    queue.sent(len(payload))
                    sent.add(len(payload), is_text)
                self._writer_busy = False
                if latency is not None:
                    now = loop.time()
                    for _, _, queued_at in batch:
                        latency.observe(now - queued_at)
        except (ConnectionResetError, RuntimeError) as error:
            log.debug("writer stopped: %s", error, extra={"socket": self._label})
        finally:
            sent.flush()

    async def _stop_writer(self) -> None:
        writer = self._writer
        if writer is None:
            return
        if self.ws.closed:
            writer.cancel()
        try:
            await asyncio.wait_for(writer, timeout=FLUSH_SECONDS)
        except (asyncio.CancelledError, TimeoutError):
            pass
