"""What one running server holds, and the app keys it is kept under.

`Gateway` (config, scheduler, routers, open sockets, in-flight count, telemetry,
redactor, state link, request log) is built by `gateway.context.gateway_context`
and stored in the aiohttp app under `GATEWAY`; handlers read it from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from reactivex import abc

from config import SluiceConfig
from observability.metrics import Metrics
from observability.telemetry import Telemetry
from operators.scheduling import seconds
from pipelines.chat_router import ChatRouter
from pipelines.endpoint import SocketEndpoint
from providers.types import ChatProvider
from resume.log import RequestLog
from security.redact import Redactor
from state.limits import RedisLimits
from state.link import RedisLink
from transport.open_socket import OpenSocket


@dataclass
class Gateway:
    """Everything one running server holds; built in `gateway_context`."""

    config: SluiceConfig
    scheduler: abc.SchedulerBase
    chat_routers: dict[str, ChatRouter]
    providers: list[ChatProvider]
    speech: dict[str, dict[str, SocketEndpoint]] = field(default_factory=dict)
    sessions: set[OpenSocket] = field(default_factory=set)
    """Every open websocket: Glide's (`SocketSession`) and the Realtime sessions."""
    draining: bool = False
    http_in_flight: int = 0
    work_ended: asyncio.Event = field(default_factory=asyncio.Event)
    telemetry: Telemetry | None = None
    redact: Redactor = field(default_factory=Redactor)
    state: RedisLink | None = None
    request_log: RequestLog | None = None
    upstream: aiohttp.ClientSession | None = None
    """The HTTP session every provider adapter shares (one connection pool)."""

    @property
    def busy(self) -> bool:
        """Whether any socket is open or any HTTP request is in flight."""
        return bool(self.sessions) or self.http_in_flight > 0

    def clock(self) -> float:
        """Unix seconds from the app's scheduler."""
        return seconds(self.scheduler)


CONFIG = web.AppKey("config", SluiceConfig)


GATEWAY = web.AppKey("gateway", Gateway)


METRICS = web.AppKey("metrics", Metrics)


ProviderFactory = Callable[[Any, aiohttp.ClientSession], ChatProvider]


PROVIDER_FACTORY = web.AppKey("provider_factory", object)


SPAN_EXPORTER = web.AppKey("span_exporter", object)


STATE_LINK = web.AppKey("state_link", RedisLink)


SHARED_LIMITS = web.AppKey("shared_limits", RedisLimits)
