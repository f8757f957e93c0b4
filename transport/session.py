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
from typing import Protocol

from aiohttp import WSCloseCode, WSMsgType, web
from reactivex import Observable, abc
from reactivex.disposable import SerialDisposable
from reactivex.subject import Subject

from observability.telemetry import ABORTED, RequestTelemetry, Telemetry
from operators.instrument import is_output_frame, model_of, outcome_of
from operators.scheduling import seconds
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.jsoncodec import dumps
from protocol.messages import ClientMessage, Inbound, encode_binary, parse_binary, parse_text
from transport.frame_writer import SentCounts, ws_frame
from transport.outbound import OutboundQueue

log = logging.getLogger("sluice.socket")

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
        gate: MessageGate | None = None,
    ) -> None:
        self.ws = ws
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
        if self._draining and not active:
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
        try:
            async for msg in self.ws:
                if self._closing:
                    continue
                if msg.type is WSMsgType.TEXT:
                    if self._max_text is not None and _utf8_len_over(msg.data, self._max_text):
                        self._too_big("text")
                        continue
                    parsed = parse_text(msg.data, self._default_type)
                    if self._gate is None:
                        self._inbound.on_next(parsed)
                    else:
                        await self._gate.before(parsed, self.active)
                        self._inbound.on_next(parsed)
                        self._gate.after()
                elif msg.type is WSMsgType.BINARY:
                    if self._max_binary is not None and len(msg.data) > self._max_binary:
                        self._too_big("binary")
                        continue
                    self._inbound.on_next(parse_binary(msg.data))
                elif msg.type is WSMsgType.ERROR:
                    # aiohttp's own max_msg_size check ends the socket with 1009
                    if getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                        self.close_reason = "frame_too_large"
        finally:
            self._inbound.on_completed()
            self._subscription.dispose()
            self.queue.close()
            self._finish_all(ABORTED)
            await self._stop_writer()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._count_close()
            self.closed.set()

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

    def drain(self) -> None:
        """Accept no new requests (the admission says so); close 1001 once idle."""
        self._draining = True
        if not self.active:
            self._close_soon(WSCloseCode.GOING_AWAY, "server draining", "draining")

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
            payload, is_text = encode_frame(replacement)
        if self._redact is not None and is_text and _error_name(frame):
            payload = self._redact(payload.decode("utf-8")).encode("utf-8")
        return payload, is_text

    def _enqueue(self, frame: Frame) -> None:
        telemetry = self._telemetry
        if telemetry is not None:
            self._account(frame, telemetry)
        payload, is_text = self._encode(frame)
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
