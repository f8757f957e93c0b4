"""One endpoint URL (e.g. `/v1/language/r/chatStream`): its websockets and the requests on them.

    open() ─► current socket ─► one writer task ─► websocket ─► one reader task ─► requests
          └► pending (no usable socket) ─► dialer: connect with backoff + jitter ─┘

When a socket ends (close 1000/1001/1011/1012, a cut connection, a missed pong):
requests that had received no frame yet are put on the next socket from the
start (transparently); requests already streaming are resumed there with
`{"type": "resume", "request_id", "after_seq"}` (the last `seq` seen), so the
caller gets every frame once (`ClientOptions.resume`; without it, or after a
1008/1009 close, they end with `ConnectionLost(retryable=True)`).
A `shutting_down` answer to a request that
had received nothing is the instance draining: that socket retires (takes no new
requests, is closed once its last request ends) and the request is resent on a
new socket, which the load balancer sends to another instance. Only `resume`
depends on state kept by the servers between sockets (their request log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine, Mapping
from typing import Any

import aiohttp

from sluice_client.errors import (
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    RouterNotFound,
    SluiceError,
)
from sluice_client.options import ClientOptions, ClientStats
from sluice_client.request import RequestHandle
from sluice_client.websocket import Socket

log = logging.getLogger("sluice.client")

FATAL_CLOSE_CODES = frozenset({1008, 1009})
"""Policy (1008) and too big (1009): sending the same requests again would fail again."""


def permanent_refusal(status: int) -> bool:
    """Whether a refused upgrade (HTTP status) will be refused again: 4xx but 408 and 429."""
    return 400 <= status < 500 and status not in (408, 429)


def refusal_error(status: int, url: str, request_id: str) -> SluiceError:
    """A permanently refused upgrade -> the error that ends a waiting request."""
    if status == 404:
        return RouterNotFound(
            f"{url}: no such router or endpoint (HTTP 404)", request_id=request_id
        )
    return ConnectFailed(
        f"{url}: upgrade refused with HTTP {status}",
        request_id=request_id,
        retryable=False,
        status=status,
    )


class Connection:
    """Requests multiplexed over websockets to one endpoint URL, reconnecting as needed."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        options: ClientOptions,
        stats: ClientStats,
        rng: random.Random,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self._session = session
        self._options = options
        self._stats = stats
        self._rng = rng
        self._headers = dict(headers or {})
        self._current: Socket | None = None
        self._sockets: set[Socket] = set()
        self._pending: list[RequestHandle] = []
        self._live: dict[str, RequestHandle] = {}
        self._failures = 0
        self._dialer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def open(self, request_id: str, first: Mapping[str, Any]) -> RequestHandle:
        """Start a request: `first` (its opening message) goes out on a usable socket.

        Returns the handle the caller reads frames from and sends further input on.
        """
        if self._closed:
            raise ClientClosed("the client is closed", request_id=request_id)
        if request_id in self._live:
            raise ValueError(f"request_id {request_id!r} is already in flight on {self.url}")
        request = RequestHandle(
            request_id,
            self,
            max_replay_bytes=self._options.max_replay_bytes,
            high_water=self._options.send_high_water,
        )
        self._live[request_id] = request
        request.send_json(first)
        self._place(request)
        return request

    @property
    def in_flight(self) -> int:
        """Requests not yet ended (waiting for a socket or on one)."""
        return len(self._live)

    def _place(self, request: RequestHandle) -> None:
        current = self._current
        if current is not None and current.usable:
            current.assign(request)
            return
        request.socket = None
        request.pending_since = asyncio.get_running_loop().time()
        self._pending.append(request)
        if self._dialer is None:
            self._dialer = asyncio.create_task(self._dial())

    def kick(self, request: RequestHandle) -> None:
        """Called by a request with new payloads: wake its socket's writer (if it has one)."""
        if isinstance(request.socket, Socket):
            request.socket.kick(request)

    def forget(self, request: RequestHandle) -> None:
        """Called when the caller is done with a request: stop tracking it."""
        if self._live.get(request.id) is request:
            del self._live[request.id]
        if request in self._pending:
            self._pending.remove(request)
        socket = request.socket
        if isinstance(socket, Socket) and socket.requests.get(request.id) is request:
            del socket.requests[request.id]
            socket.close_if_idle()

    def resend(self, request: RequestHandle) -> None:
        """Put a request that received nothing on another socket, from its first message."""
        request.socket = None
        if request.sends >= self._options.max_sends:
            self._lose(request, None, f"the request was sent {request.sends} times without answer")
            return
        self._stats.resent += 1
        request.rewind()
        self._place(request)

    def _lose(self, request: RequestHandle, code: int | None, why: str) -> None:
        self._stats.lost += 1
        request.fail(
            ConnectionLost(
                f"{self.url}: {why}; the request did not finish (send it again)",
                request_id=request.id,
                retryable=code not in FATAL_CLOSE_CODES,
                close_code=code,
            )
        )

    def on_terminal(self, frame: Mapping[str, Any]) -> None:
        """Count a request's terminal frame."""
        if frame.get("type") == "error":
            self._stats.failed += 1
        else:
            self._stats.completed += 1

    def socket_worked(self, socket: Socket) -> None:
        """A socket delivered a frame: the endpoint is healthy, reset the backoff."""
        self._failures = 0

    def socket_retired(self, socket: Socket) -> None:
        """A socket takes no new requests: the next request opens a new one."""
        if self._current is socket:
            self._current = None

    def socket_closed(self, socket: Socket) -> None:
        """A socket ended: resend requests that received nothing, fail the others."""
        self._sockets.discard(socket)
        if self._current is socket:
            self._current = None
        self._stats.closes += 1
        if not socket.got_frame:
            self._failures += 1
        code = socket.ws.close_code
        fatal = code in FATAL_CLOSE_CODES
        requests = list(socket.requests.values())
        socket.requests.clear()
        for request in requests:
            if request.ended:
                continue
            if self._closed:
                request.fail(ClientClosed("the client was closed", request_id=request.id))
            elif request.resendable and not fatal:
                self.resend(request)
            else:
                self._cut_mid_stream(request, code)

    def _cut_mid_stream(self, request: RequestHandle, code: int | None) -> None:
        """A started request lost its socket: resume it on the next one after the last
        `seq` it saw, or (resume off, a fatal close, too many tries) end it with
        `ConnectionLost`."""
        if (
            not self._options.resume
            or code in FATAL_CLOSE_CODES
            or request.resumes >= self._options.max_sends
        ):
            self._lose(request, code, f"the websocket closed mid-stream (code {code})")
            return
        self._stats.resumed += 1
        request.socket = None
        request.resume_next()
        self._place(request)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine as a task this connection keeps a reference to until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self) -> None:
        try:
            while self._pending and not self._closed:
                delay = self._options.backoff.delay(self._failures, self._rng)
                if delay > 0:
                    await asyncio.sleep(delay)
                self._expire_pending()
                if not self._pending:
                    break
                ws = await self._connect()
                if ws is None:
                    continue
                socket = Socket(self, ws)
                self._sockets.add(socket)
                self._current = socket
                socket.start()
                waiting, self._pending = self._pending, []
                for request in waiting:
                    if not request.ended:
                        socket.assign(request)
        finally:
            self._dialer = None

    def _dial_url(self) -> str:
        """The upgrade URL: with resume on, `resume=1` tells the server this client
        resumes, so a draining server may close a busy socket with 1012 at once."""
        if not self._options.resume:
            return self.url
        return f"{self.url}{'&' if '?' in self.url else '?'}resume=1"

    async def _connect(self) -> aiohttp.ClientWebSocketResponse | None:
        """One handshake; None (and a failure counted) when it did not work out."""
        try:
            async with asyncio.timeout(self._options.connect_timeout):
                ws = await self._session.ws_connect(
                    self._dial_url(),
                    heartbeat=self._options.heartbeat,
                    max_msg_size=self._options.max_msg_size,
                    headers=self._headers,
                )
        except aiohttp.WSServerHandshakeError as error:
            self._connect_failed(f"upgrade refused with HTTP {error.status}")
            if permanent_refusal(error.status):
                waiting, self._pending = self._pending, []
                for request in waiting:
                    request.fail(refusal_error(error.status, self.url, request.id))
            return None
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            self._connect_failed(f"{type(error).__name__}: {error}")
            return None
        self._stats.connects += 1
        return ws

    def _connect_failed(self, why: str) -> None:
        self._stats.connect_failures += 1
        self._failures += 1
        log.info("client: connect to %s failed (%s)", self.url, why)

    def _expire_pending(self) -> None:
        now = asyncio.get_running_loop().time()
        limit = self._options.pending_timeout
        expired = [
            r
            for r in self._pending
            if r.pending_since is not None and now - r.pending_since > limit
        ]
        for request in expired:
            self._pending.remove(request)
            request.fail(
                ConnectFailed(
                    f"{self.url}: no connection within {limit:g} s",
                    request_id=request.id,
                )
            )

    async def aclose(self) -> None:
        """End every request with `ClientClosed`, close every socket, stop every task."""
        self._closed = True
        dialer = self._dialer
        if dialer is not None:
            dialer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dialer
        for request in self._pending:
            request.fail(ClientClosed("the client was closed", request_id=request.id))
        self._pending.clear()
        sockets = list(self._sockets)
        for socket in sockets:
            with contextlib.suppress(Exception):
                await socket.ws.close()
        readers = [s.reader for s in sockets if s.reader is not None]
        if readers:
            await asyncio.gather(*readers, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
