"""The contract between the server and a websocket endpoint's pipeline.

A new endpoint is a module with a `build_*_endpoint(router_config, context)`
function returning a `SocketEndpoint`; the server only routes upgrades to it,
runs the socket, and lists it. The server never learns the endpoint's messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from reactivex import Observable, abc

from config.models import LimitsConfig
from observability.telemetry import Telemetry
from operators.scheduling import seconds
from pipelines.common import Admission
from protocol.frames import Frame
from protocol.messages import Inbound
from routing.router import HealthShare

Pipeline = Callable[[Observable[Inbound]], Observable[Frame]]
"""One socket: its inbound messages -> the merged frames of all its requests."""


@dataclass(frozen=True)
class BuildContext:
    """What an endpoint may use when it is built: shared HTTP session, time, limits.

    `telemetry` (None in tests) is the app's metrics / traces / request logs:
    request outcomes are counted by the socket session for every endpoint; an
    endpoint adds its provider attempts with `operators.instrument.instrument_attempt(
    admission.request_telemetry(request_id), model, provider)` and its own
    histograms via `telemetry.metrics` (e.g. `time_to_final_transcript`).
    """

    session: aiohttp.ClientSession
    scheduler: abc.SchedulerBase
    limits: LimitsConfig
    telemetry: Telemetry | None = None
    health_share: HealthShare | None = None
    """With `state.redis`: spreads the endpoints' health verdicts to other instances."""

    def clock(self) -> float:
        """Unix seconds from the app's scheduler."""
        return seconds(self.scheduler)


class SocketEndpoint(Protocol):
    """A websocket endpoint of one router (e.g. speak of speech router "default")."""

    router_id: str
    default_type: str

    def pipeline(self, admission: Admission) -> Pipeline:
        """A fresh pipeline for one accepted socket."""
        ...

    def describe(self, now: float) -> dict[str, Any]:
        """JSON for the router listing: models, providers, health (never secrets)."""
        ...

    async def aclose(self) -> None:
        """Release providers, workers and connections."""
        ...
