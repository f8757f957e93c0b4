"""Connection guard: half-sent requests, idle keep-alive connections, descriptor headroom.

aiohttp times nothing out before a request head is complete, so a client that
sends `GET / HTTP/1.1\\r\\nHost: x\\r\\n` and stops holds a file descriptor until
it leaves. The guard wraps each connection's protocol:

    connect ──► pending (head timer: server.header_timeout) ──► head complete ──► in request
                  │  the timer fires: 408 if bytes came, closed              │
    response done ◄──────────────────────────────────────────────────────────┘
       └─► idle (server.keepalive_timeout; then closed quietly)
             └─► first byte of the next request ──► pending again

A connection is refused at once (503 `too_many_connections`, closed) when
`server.max_pending_connections` connections of this process, or
`server.max_pending_per_peer` of its peer address, are already pending.
"Head complete" is reported by `guard_middleware` (aiohttp calls the app for a
request once its head is parsed); "response done" when the handler returned.
Bytes that arrive while a request is being answered may be its body, so a
request head pipelined behind another one is timed by `keepalive_timeout`.

`guard_connections(runner)` installs it on a runner after `setup()` (the serve
path calls it); `report_descriptor_headroom(...)` logs RLIMIT_NOFILE at start;
`quiet_malformed_requests()` turns aiohttp's error-level tracebacks for requests
it cannot parse (a client's garbage, oversized heads) into one info line that
repeats none of the request's bytes (they may hold a client's key).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import resource
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from config.models import ServerConfig
from observability.network import NetworkMetrics
from protocol import jsoncodec

log = logging.getLogger("sluice.connections")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ProtocolFactory = Callable[[], asyncio.BaseProtocol]

TOO_MANY_CONNECTIONS = "too_many_connections"
REQUEST_TIMEOUT = "request_timeout"


def _raw_response(status: str, name: str, message: str) -> bytes:
    body = jsoncodec.dumps({"name": name, "message": message})
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class State(enum.Enum):
    """Where a guarded connection is in its request cycle."""

    PENDING = "pending"
    IN_REQUEST = "in_request"
    IDLE = "idle"


class ConnectionGuard:
    """The guard of one app: settings, the pending counts, the live connections.

    `max_sockets` (`limits.max_sockets`) only sizes the descriptor headroom check.
    `protect(protocol)` wraps a new connection's protocol; `request_started(t)` /
    `request_ended(t)` move the connection on transport `t` through its states.
    """

    def __init__(
        self,
        settings: ServerConfig,
        metrics: NetworkMetrics | None = None,
        *,
        max_sockets: int = 0,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.max_sockets = max_sockets
        self.pending = 0
        self.pending_by_peer: dict[str, int] = {}
        self._connections: dict[asyncio.BaseTransport, GuardedProtocol] = {}

    def protect(self, inner: asyncio.BaseProtocol) -> GuardedProtocol:
        """A new connection's protocol in, the guarded protocol the event loop drives out."""
        return GuardedProtocol(inner, self)

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection on `transport` delivered a whole request head."""
        connection = self._connections.get(transport) if transport is not None else None
        if connection is not None:
            connection.enter(State.IN_REQUEST)

    def request_ended(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection on `transport` finished answering its request."""
        connection = self._connections.get(transport) if transport is not None else None
        if connection is not None:
            connection.enter(State.IDLE)

    def admit(self, connection: GuardedProtocol) -> str | None:
        """A new connection in: None when it may wait for its head, else why it is refused."""
        if self.pending >= self.settings.max_pending_connections:
            return "pending_limit"
        if self.pending_by_peer.get(connection.peer, 0) >= self.settings.max_pending_per_peer:
            return "peer_pending_limit"
        return None

    def track(self, transport: asyncio.BaseTransport, connection: GuardedProtocol) -> None:
        """Remember an admitted connection until `forget(transport)`."""
        self._connections[transport] = connection

    def forget(self, transport: asyncio.BaseTransport) -> None:
        """The connection on `transport` ended."""
        self._connections.pop(transport, None)

    def count_pending(self, peer: str, delta: int) -> None:
        """Add `delta` (+1 / -1) to the pending counts of the process and of `peer`."""
        self.pending += delta
        if self.metrics is not None:
            self.metrics.pending.inc(delta)
        left = self.pending_by_peer.get(peer, 0) + delta
        if left > 0:
            self.pending_by_peer[peer] = left
        else:
            self.pending_by_peer.pop(peer, None)


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's timers and counts.

    Every event the transport delivers is passed on unchanged; the guard only
    watches, and closes the transport when a timer fires.
    """

    def __init__(self, inner: asyncio.BaseProtocol, guard: ConnectionGuard) -> None:
        self._inner = cast(asyncio.Protocol, inner)
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state: State | None = None
        self._bytes_since_state = False
        self._refused = False
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection (or answer 503 and close it) and start its head timer."""
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            self.peer = str(peername[0])
        guard = self._guard
        reason = guard.admit(self)
        if reason is not None:
            self._refused = True
            if guard.metrics is not None:
                guard.metrics.refused.labels(reason).inc()
            log.info(
                "connection refused",
                extra={"reason": reason, "peer": self.peer, "pending": guard.pending},
            )
            self._transport.write(
                _raw_response(
                    "503 Service Unavailable",
                    TOO_MANY_CONNECTIONS,
                    "too many connections are still sending their request; retry later",
                )
            )
            self._transport.close()
            return
        guard.track(transport, self)
        self.enter(State.PENDING)
        self._inner.connection_made(transport)

    def enter(self, state: State) -> None:
        """Move to `state`: adjust the pending counts and (re)start the right timer."""
        if self._refused or self._state is state:
            return
        if self._state is State.PENDING:
            self._guard.count_pending(self.peer, -1)
        elif state is State.PENDING:
            self._guard.count_pending(self.peer, +1)
        self._state = state
        self._bytes_since_state = False
        self._cancel_timer()
        settings = self._guard.settings
        delay = {
            State.PENDING: settings.header_timeout,
            State.IDLE: settings.keepalive_timeout,
        }.get(state)
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self._expired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        metrics = self._guard.metrics
        if self._state is State.PENDING:
            if metrics is not None:
                metrics.header_timeouts.inc()
            log.info(
                "request head timed out: closing the connection",
                extra={"peer": self.peer, "timeout": self._guard.settings.header_timeout},
            )
            if self._bytes_since_state:
                transport.write(
                    _raw_response(
                        "408 Request Timeout",
                        REQUEST_TIMEOUT,
                        "the request head did not arrive within "
                        f"{self._guard.settings.header_timeout:g} s",
                    )
                )
        elif self._state is State.IDLE:
            if metrics is not None:
                metrics.idle_closes.inc()
            log.debug("idle connection closed", extra={"peer": self.peer})
        transport.close()

    def data_received(self, data: bytes) -> None:
        """Bytes in: an idle connection starts a new request head; then aiohttp parses them."""
        if self._refused:
            return
        if data:
            if self._state is State.IDLE:
                self.enter(State.PENDING)
            self._bytes_since_state = True
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        """The peer closed its side; aiohttp decides what follows."""
        return None if self._refused else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection ended: forget it, uncount it, tell aiohttp."""
        self._cancel_timer()
        if self._refused:
            return
        if self._state is State.PENDING:
            self._guard.count_pending(self.peer, -1)
        self._state = None
        if self._transport is not None:
            self._guard.forget(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """The transport's write buffer is full (aiohttp waits for the drain)."""
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        """The transport's write buffer drained."""
        self._inner.resume_writing()


HTTP_GUARD = web.AppKey("sluice_http_guard", ConnectionGuard)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the app's guard (if installed) that a head arrived, and when its answer ended."""
    guard = request.app.get(HTTP_GUARD)
    if guard is None:
        return await handler(request)
    transport = request.transport
    guard.request_started(transport)
    try:
        return await handler(request)
    finally:
        guard.request_ended(transport)


class _GuardedServer(web.Server):
    """aiohttp's `web.Server` whose protocols the guard wraps (see `guard_connections`)."""

    sluice_guard: ConnectionGuard

    def __call__(self) -> Any:
        return self.sluice_guard.protect(super().__call__())


def guard_connections(runner: web.AppRunner) -> ConnectionGuard:
    """Install the app's guard (`app[HTTP_GUARD]`) on `runner`'s connections.

    Call after `runner.setup()` and before any site starts. aiohttp has no hook for
    the protocol factory its sites use (`runner.server`), so that server object's
    class becomes a subclass whose `__call__` wraps each new protocol.
    """
    server = runner.server
    if server is None:
        raise RuntimeError("guard_connections needs a runner that was set up")
    guard = runner.app[HTTP_GUARD]
    server.__class__ = _GuardedServer
    cast(_GuardedServer, server).sluice_guard = guard
    report_descriptor_headroom(guard.settings, guard.max_sockets)
    quiet_malformed_requests()
    return guard


class MalformedRequestFilter(logging.Filter):
    """On `aiohttp.server`: a parse error's traceback (error level) -> one info line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a record whose exception is an `HttpProcessingError`; pass the rest."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "malformed HTTP request refused (%s, status %s)"
            record.args = (type(error).__name__, error.code)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_malformed_requests() -> None:
    """Install `MalformedRequestFilter` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in logger.filters):
        logger.addFilter(MalformedRequestFilter())


def open_descriptors() -> int | None:
    """How many file descriptors this process has open (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def report_descriptor_headroom(settings: ServerConfig, max_sockets: int) -> None:
    """Log RLIMIT_NOFILE, the descriptors open and the headroom at start.

    A warning when the headroom is below what the configured socket and pending
    connection limits could use (then `accept` fails before the limits bite).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = open_descriptors()
    headroom = None if soft == resource.RLIM_INFINITY or in_use is None else soft - in_use
    needed = settings.max_pending_connections + max_sockets
    fields = {
        "nofile_soft": None if soft == resource.RLIM_INFINITY else soft,
        "nofile_hard": None if hard == resource.RLIM_INFINITY else hard,
        "open_descriptors": in_use,
        "headroom": headroom,
        "header_timeout": settings.header_timeout,
        "max_pending_connections": settings.max_pending_connections,
        "max_pending_per_peer": settings.max_pending_per_peer,
    }
    if headroom is not None and headroom < needed:
        log.warning(
            "file descriptor headroom is below limits.max_sockets + "
            "server.max_pending_connections: raise `ulimit -n` (RLIMIT_NOFILE)",
            extra={**fields, "needed": needed},
        )
    else:
        log.info("file descriptors", extra=fields)
