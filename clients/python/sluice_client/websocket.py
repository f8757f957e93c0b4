"""One open websocket of an endpoint: its requests, its single writer and its single reader.

requests' outboxes ─► writer task ─► websocket ─► reader task ─► frames routed by request_id

The reader hands every frame to its request and tells its owner (the endpoint's
`Connection`) what happened: the first frame, a terminal frame, a `shutting_down`
answer to a request that can be resent, and finally the close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

import aiohttp
from aiohttp import WSMsgType

from sluice_client.framing import decode_audio, error_name, finish_reason
from sluice_client.request import RequestHandle

log = logging.getLogger("sluice.client")

SHUTTING_DOWN = "shutting_down"


class SocketOwner(Protocol):
    """What a socket reports to the connection that owns it."""

    def resend(self, request: RequestHandle) -> None:
        """A request that received nothing must go out on another socket."""

    def on_terminal(self, frame: Mapping[str, Any]) -> None:
        """A request ended with this terminal frame."""

    def socket_worked(self, socket: Socket) -> None:
        """The socket delivered its first frame."""

    def socket_retired(self, socket: Socket) -> None:
        """The socket takes no new requests (its instance is draining)."""

    def socket_closed(self, socket: Socket) -> None:
        """The socket ended; its remaining requests need a decision."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` as a task the owner keeps until it ends."""


class Socket:
    """One open websocket: its requests, its single writer and its single reader."""

    def __init__(self, owner: SocketOwner, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.owner = owner
        self.ws = ws
        self.requests: dict[str, RequestHandle] = {}
        self.retiring = False
        self.got_frame = False
        self._closing = False
        self._ready: deque[RequestHandle] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer and reader tasks."""
        self._writer = asyncio.create_task(self._write())
        self.reader = asyncio.create_task(self._read())

    @property
    def usable(self) -> bool:
        """Whether a new request may be put on this socket."""
        return not self.retiring and not self.ws.closed

    def assign(self, request: RequestHandle) -> None:
        """Put a request (its outbox already holds its first message) on this socket."""
        request.socket = self
        request.sends += 1
        self.requests[request.id] = request
        self.kick(request)

    def kick(self, request: RequestHandle) -> None:
        """`request` has payloads queued: wake the writer."""
        if request not in self._ready:
            self._ready.append(request)
        self._wake.set()

    def retire(self) -> None:
        """Take no new requests; close once the requests on it have ended."""
        self.retiring = True
        self.owner.socket_retired(self)
        self.close_if_idle()

    def close_if_idle(self) -> None:
        """A retiring socket with no requests left is closed (1000)."""
        if self.retiring and not self.requests:
            self.close()

    def close(self) -> None:
        """Close the websocket (once); the reader then ends and reports to the connection."""
        if not self._closing and not self.ws.closed:
            self._closing = True
            self.owner.spawn(self.ws.close())

    async def _write(self) -> None:
        try:
            while True:
                while not self._ready:
                    self._wake.clear()
                    await self._wake.wait()
                request = self._ready.popleft()
                while request.socket is self and (payload := request.next_payload()) is not None:
                    if isinstance(payload, str):
                        await self.ws.send_str(payload)
                    else:
                        await self.ws.send_bytes(payload)
        except Exception as error:  # a dead transport, or a bug: either way the socket is done
            log.debug("client writer stopped: %r", error)
            self.close()

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self._on_audio(msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            writer = self._writer
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close()
            self.owner.socket_closed(self)

    def _on_text(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            log.warning("client: the server sent a frame that is not JSON")
            return
        if not isinstance(frame, dict):
            return
        request_id = frame.get("request_id")
        request = self.requests.get(request_id) if isinstance(request_id, str) else None
        if request is None:
            if request_id is None and frame.get("type") == "error":
                log.warning("client: error frame for no request: %s", frame.get("error"))
            return
        self._saw_frame()
        reason = finish_reason(frame)
        if error_name(frame) == SHUTTING_DOWN:
            if not self.retiring:
                self.retire()
            if reason is not None and request.resendable:
                del self.requests[request.id]
                self.owner.resend(request)
                self.close_if_idle()
                return
        request.mark_started()
        if reason is None:
            request.deliver(frame)
            return
        del self.requests[request.id]
        self.owner.on_terminal(frame)
        request.finish(frame)
        self.close_if_idle()

    def _on_audio(self, data: bytes) -> None:
        decoded = decode_audio(data)
        if decoded is None:
            log.warning("client: malformed binary frame from the server")
            return
        request_id, audio = decoded
        request = self.requests.get(request_id)
        if request is None:
            return
        self._saw_frame()
        request.mark_started()
        request.deliver(audio)

    def _saw_frame(self) -> None:
        if not self.got_frame:
            self.got_frame = True
            self.owner.socket_worked(self)
