"""Routing and health for a router's models: pure, synchronous, time injected as `now`.

`ModelRouter` combines per-model `ModelHealth` with a `RoutingStrategy`;
`backoff_delay` / `retry_delays` space whole retry passes.
"""

from routing.backoff import backoff_delay, retry_delays
from routing.health import EventSink, ModelHealth, TokenBucket
from routing.latency import MovingAverage
from routing.router import ModelRouter
from routing.strategies import (
    LeastLatencyStrategy,
    PriorityStrategy,
    RoundRobinStrategy,
    RoutingStrategy,
    WeightedRoundRobinStrategy,
    build_strategy,
)

__all__ = [
    "EventSink",
    "LeastLatencyStrategy",
    "ModelHealth",
    "ModelRouter",
    "MovingAverage",
    "PriorityStrategy",
    "RoundRobinStrategy",
    "RoutingStrategy",
    "TokenBucket",
    "WeightedRoundRobinStrategy",
    "backoff_delay",
    "build_strategy",
    "retry_delays",
]
