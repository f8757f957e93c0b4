"""The `/metrics` gauge of the shared state store: `sluice_state_store_up{store}`."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

STATE_UP = (
    "sluice_state_store_up",
    "1 while the shared state store (state.redis) answers, 0 while this instance "
    "serves on local state (with several workers: 0 when any worker sees it down).",
)


def state_store_gauge(
    registry: CollectorRegistry, store: str | None = "redis"
) -> Callable[[bool], None]:
    """A registry and the store's name in; a setter `(up) -> None` of its gauge
    (0, down, until the first answer) out. With no store (`None`: no `state.redis`)
    the family is declared with no series, and the setter does nothing."""
    gauge = Gauge(*STATE_UP, ["store"], registry=registry, multiprocess_mode="livemin")
    if store is None:
        return lambda up: None
    child = gauge.labels(store)
    child.set(0)

    def set_up(up: bool) -> None:
        child.set(1 if up else 0)

    return set_up
