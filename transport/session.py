"""One websocket: its reader (the handler task), its pipeline and its single writer.

websocket frames ─► parse ─► Subject[Inbound] ─► pipeline ─► encode ─►
OutboundQueue (bounded) ─► writer task ─► websocket

Only the handler task reads the socket and only the writer task sends on it.
When the client goes away the inbound stream completes, which disposes every
request in flight (cancelling their provider calls).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web
from reactivex import Observable, abc
from reactivex.subject import Subject

from protocol.frames import Frame
from protocol.messages import Inbound, encode_binary, parse_binary, parse_text
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
        pipeline: Pipeline,
        *,
        default_type: str,
        scheduler: abc.SchedulerBase,
        max_queued_bytes: int,
        label: str,
    ) -> None:
        self.ws = ws
        self._pipeline = pipeline
        self._default_type = default_type
        self._scheduler = scheduler
        self.queue = OutboundQueue(max_queued_bytes)
        self._label = label
        self._inbound: Subject[Inbound] = Subject()
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def run(self) -> None:
        """Read until the socket closes; then stop the pipeline and the writer."""
        self._writer = asyncio.create_task(self._write())
        subscription = self._pipeline(self._inbound).subscribe(
            self._enqueue, self._pipeline_failed, self.queue.close, scheduler=self._scheduler
        )
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    self._inbound.on_next(parse_text(msg.data, self._default_type))
                elif msg.type is WSMsgType.BINARY:
                    self._inbound.on_next(parse_binary(msg.data))
                if self._closing:
                    break
        finally:
            self._inbound.on_completed()
            subscription.dispose()
            self.queue.close()
            await self._stop_writer()

    async def close(self, code: int, message: str) -> None:
        """Close the socket from the server side (drain, policy)."""
        self._closing = True
        if not self.ws.closed:
            await self.ws.close(code=code, message=message.encode("utf-8"))

    def _enqueue(self, frame: Frame) -> None:
        if not self.queue.put(encode_frame(frame)) and self.queue.overflowed:
            self._on_overflow()

    def _on_overflow(self) -> None:
        if self._closing:
            return
        self._closing = True
        log.warning(
            "slow consumer: outbound queue passed its bound; closing the socket",
            extra={"socket": self._label, "queued_bytes": self.queue.queued_bytes},
        )
        self._inbound.on_completed()
        task = asyncio.get_running_loop().create_task(
            self.close(WSCloseCode.POLICY_VIOLATION, "slow consumer: outbound queue full")
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
