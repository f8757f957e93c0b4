"""What the server needs of every open websocket, whatever its protocol.

Glide's sockets (`transport.session.SocketSession`: chatStream, speak, listen,
converse) and the OpenAI Realtime sessions (`realtime.endpoint.RealtimeSession`)
both are one: the gateway keeps them in `Gateway.sessions`, the metrics gauges
count them (`gateway.gauges`), and a drain tells each one (`serving.drain`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sized
from typing import Protocol

from transport.outbound import OutboundQueue


class OpenSocket(Protocol):
    """An open websocket as the gauges and the drain see it."""

    @property
    def endpoint(self) -> str:
        """Its endpoint's name for metrics (`chatStream`, `listen`, `realtime`, ...)."""
        ...

    @property
    def router_id(self) -> str:
        """The router it serves."""
        ...

    @property
    def active(self) -> Sized:
        """Its requests in flight (their number is the active-requests gauge)."""
        ...

    @property
    def queue(self) -> OutboundQueue:
        """Its outbound queue (its bytes are the queued-bytes gauge)."""
        ...

    @property
    def client_resumes(self) -> bool:
        """Whether its client said it resumes (a drain may close it with 1012)."""
        ...

    @property
    def closed(self) -> asyncio.Event:
        """Set once the socket is closed."""
        ...

    def flush_counts(self) -> None:
        """Add its batched frame and byte counts to the metrics now."""

    def drain(self, restart: bool = False) -> None:
        """The server drains: take no new work; close 1001 once idle (or 1012 at once
        when busy, with `restart`, where the protocol can resume)."""

    def end_now(self, clock: Callable[[], float]) -> None:
        """The drain's grace is over: end the work in flight and close 1001."""
