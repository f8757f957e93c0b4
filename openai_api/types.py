"""The shapes this package needs from the server, named without importing it.

`gateway.app` imports this package to wire the routes, so the package sees the
running gateway through `GatewayView` (what `gateway.core.Gateway` provides).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import web
from reactivex import abc

from config.models import SluiceConfig
from observability.telemetry import Telemetry
from pipelines.chat_router import ChatRouter
from pipelines.endpoint import SocketEndpoint
from security.redact import Redactor
from transport.open_socket import OpenSocket


class GatewayView(Protocol):
    """The parts of `gateway.core.Gateway` the OpenAI endpoints use."""

    config: SluiceConfig
    scheduler: abc.SchedulerBase
    chat_routers: dict[str, ChatRouter]
    speech: dict[str, dict[str, SocketEndpoint]]
    draining: bool
    http_in_flight: int
    work_ended: asyncio.Event
    sessions: set[OpenSocket]
    telemetry: Telemetry | None
    redact: Redactor

    def clock(self) -> float:
        """Unix seconds from the app's scheduler."""
        ...


GatewayKey = web.AppKey[Any]
"""The app key the server stores its `Gateway` under (`gateway.core.GATEWAY`)."""
