"""One websocket: its reader (the handler task), its pipeline and its single writer.

websocket frames ─► parse ─► Subject[Inbound] ─► pipeline ─► encode ─►
OutboundQueue (bounded) ─► writer task ─► websocket

Only the handler task reads the socket and only the writer task sends on it.
When the client goes away the inbound stream completes, which disposes every
request in flight (cancelling their provider calls).

Drain: `drain()` closes an idle socket at once (1001) and a busy one as soon as
its last request ends; `end_now()` (the grace deadline) stops every request,
sends each its terminal `shutting_down` error, flushes, and closes with 1001.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping

from aiohttp import WSCloseCode, WSMsgType, web
from reactivex import Observable, abc
from reactivex.disposable import SerialDisposable
from reactivex.subject import Subject

from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.messages import ClientMessage, Inbound, encode_binary, parse_binary, parse_text
from transport.outbound import OutboundQueue

log = logging.getLogger("sluice.socket")

Pipeline = Callable[[Observable[Inbound]], Observable[Frame]]


def encode_frame(frame: Frame) -> str | bytes:
    """A frame as the websocket payload: compact JSON text, or id-prefixed audio."""
    if isinstance(frame.data, bytes):
        assert frame.request_id is not None
        return encode_binary(frame.request_id, frame.data)
    return json.dumps(frame.data, separators=(",", ":"), ensure_ascii=False)


class SocketSession:
    """Runs one accepted websocket until either side closes it."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        default_type: str,
        scheduler: abc.SchedulerBase,
        max_queued_bytes: int,
        router_id: str,
        label: str,
    ) -> None:
        self.ws = ws
        self._default_type = default_type
        self._scheduler = scheduler
        self.queue = OutboundQueue(max_queued_bytes)
        self.router_id = router_id
        self._label = label
        self._inbound: Subject[Inbound] = Subject()
        self._subscription = SerialDisposable()
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._draining = False
        self.active: Mapping[str, ClientMessage] = {}
        self.closed = asyncio.Event()

    def on_active_change(self, active: Mapping[str, ClientMessage]) -> None:
        """Hears the requests in flight; a draining socket closes when none is left."""
        self.active = active
        if self._draining and not active:
            self._close_soon(WSCloseCode.GOING_AWAY, "server draining")

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
                    self._inbound.on_next(parse_text(msg.data, self._default_type))
                elif msg.type is WSMsgType.BINARY:
                    self._inbound.on_next(parse_binary(msg.data))
        finally:
            self._inbound.on_completed()
            self._subscription.dispose()
            self.queue.close()
            await self._stop_writer()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.closed.set()

    def drain(self) -> None:
        """Accept no new requests (the admission says so); close 1001 once idle."""
        self._draining = True
        if not self.active:
            self._close_soon(WSCloseCode.GOING_AWAY, "server draining")

    def end_now(self, clock: Callable[[], float]) -> None:
        """Grace is over: end every request with `shutting_down`, flush, close 1001."""
        active = dict(self.active)
        self._subscription.dispose()
        for request_id, first in active.items():
            frames = FrameFactory(request_id, self.router_id, first.metadata, clock)
            self.queue.put(
                encode_frame(
                    frames.error(
                        ErrorName.SHUTTING_DOWN,
                        "this instance is shutting down; send the request again on a new "
                        "connection",
                    )
                )
            )
        self.active = {}
        self._close_soon(WSCloseCode.GOING_AWAY, "server shutting down")

    def _close_soon(self, code: int, message: str) -> None:
        if self._closing:
            return
        self._closing = True
        task = asyncio.get_running_loop().create_task(self._flush_and_close(code, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_and_close(self, code: int, message: str) -> None:
        self.queue.close()
        if self._writer is not None and not self.queue.overflowed:
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), 5.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
        if not self.ws.closed:
            await self.ws.close(code=code, message=message.encode("utf-8"))

    def _enqueue(self, frame: Frame) -> None:
        if not self.queue.put(encode_frame(frame)) and self.queue.overflowed:
            self._on_overflow()

    def _on_overflow(self) -> None:
        if self._closing:
            return
        log.warning(
            "slow consumer: outbound queue passed its bound; closing the socket",
            extra={"socket": self._label, "queued_bytes": self.queue.queued_bytes},
        )
        self._subscription.dispose()
        self._close_soon(WSCloseCode.POLICY_VIOLATION, "slow consumer: outbound queue full")

    def _pipeline_failed(self, error: Exception) -> None:
        log.error("socket pipeline failed", exc_info=error, extra={"socket": self._label})
        self.queue.close()

    async def _write(self) -> None:
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    return
                if isinstance(item, str):
                    await self.ws.send_str(item)
                else:
                    await self.ws.send_bytes(item)
        except (ConnectionResetError, RuntimeError) as error:
            log.debug("writer stopped: %s", error, extra={"socket": self._label})

    async def _stop_writer(self) -> None:
        writer = self._writer
        if writer is None:
            return
        if self.ws.closed:
            writer.cancel()
        try:
            await asyncio.wait_for(writer, timeout=5.0)
        except (asyncio.CancelledError, TimeoutError):
            pass
