"""One router's models: health per model plus a routing strategy.

The failover operator asks `plan(now)` for the order to try models in, checks
`available(model_id, now)` right before each attempt, calls `begin_attempt` and
then exactly one of `record_success`, `record_failure` or `cancel_attempt`.
Synchronous and deterministic: time flows in as `now` (scheduler seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from config.models import ModelBase
from routing.health import EventSink, ModelHealth
from routing.strategies import RoutingStrategy


class HealthShare(Protocol):
    """Shares health verdicts with other instances (`state.health.SharedHealth`).

    `router_key` names a router across instances: the language router's id,
    `speak:<id>` or `listen:<id>` for a speech router's sections."""

    def sink(self, router_key: str, downstream: EventSink) -> EventSink:
        """A router's event sink in; one that also publishes its verdicts out."""
        ...

    def adopt(self, router_key: str, tracker: ModelRouter, models: Sequence[ModelBase]) -> None:
        """A router just built: apply the verdicts known for its models."""
        ...


def build_model_router(
    router_key: str,
    models: Sequence[ModelBase],
    strategy: RoutingStrategy,
    now: float,
    on_event: EventSink,
    share: HealthShare | None,
) -> ModelRouter:
    """`ModelRouter(...)` whose verdicts `share` (None: this instance alone) spreads."""
    if share is None:
        return ModelRouter(router_key.rpartition(":")[2], models, strategy, now, on_event)
    tracker = ModelRouter(
        router_key.rpartition(":")[2], models, strategy, now, share.sink(router_key, on_event)
    )
    share.adopt(router_key, tracker, models)
    return tracker


class ModelRouter:
    """Health and routing order for one router's models (chat, speak or listen).

    In: the router id, its models (config order), a strategy, the scheduler time at
    creation and an optional `on_event(name, fields)` sink; every event gets a
    `router_id` field added. Out: plans (ordered model ids) and health states.
    """

    def __init__(
        self,
        router_id: str,
        models: Sequence[ModelBase],
        strategy: RoutingStrategy,
        now: float = 0.0,
        on_event: EventSink | None = None,
    ) -> None:
        self.router_id = router_id
        self.strategy = strategy
        self._on_event = on_event
        self._health: dict[str, ModelHealth] = {}
        for model in models:
            if model.id in self._health:
                raise ValueError(f"duplicate model id {model.id!r} in router {router_id!r}")
            self._health[model.id] = ModelHealth(
                model.id, model.error_budget, model.health, now, self._emit
            )

    @property
    def model_ids(self) -> list[str]:
        """The router's model ids in config order."""
        return list(self._health)

    def health(self, model_id: str) -> ModelHealth:
        """The health tracker of `model_id` (KeyError for an unknown id)."""
        return self._health[model_id]

    def plan(self, now: float) -> list[str]:
        """The models available at `now`, in the order to try them; [] when none is."""
        available = [m for m, health in self._health.items() if health.available(now)]
        if not available:
            return []
        return self.strategy.order(available, now)

    def available(self, model_id: str, now: float) -> bool:
        """True when `model_id` may be tried at `now` (see `ModelHealth.available`)."""
        return self._health[model_id].available(now)

    def begin_attempt(self, model_id: str, now: float) -> None:
        """An attempt on `model_id` starts (claims a half-open probe slot)."""
        self._health[model_id].begin_attempt(now)

    def cancel_attempt(self, model_id: str, now: float) -> None:
        """An attempt on `model_id` ended without a verdict (cancel, dispose)."""
        self._health[model_id].cancel_attempt(now)

    def record_success(self, model_id: str, now: float, latency: float | None = None) -> None:
        """An attempt on `model_id` succeeded; `latency` (seconds) feeds the strategy."""
        self._health[model_id].record_success(now)
        if latency is not None:
            self.strategy.observe(model_id, latency, now)

    def record_failure(self, model_id: str, error: BaseException, now: float) -> None:
        """An attempt on `model_id` failed with `error` (charged by its category)."""
        self._health[model_id].record_failure(error, now)

    def unavailable_until(self, model_id: str, now: float) -> float | None:
        """When `model_id` is available again (`math.inf` while disabled); None when it
        is available now or its return is unknown (see `ModelHealth.unavailable_until`)."""
        return self._health[model_id].unavailable_until(now)

    def health_states(self, now: float) -> dict[str, str]:
        """Each model's state at `now`: healthy, unhealthy, half_open or disabled."""
        return {m: health.state(now) for m, health in self._health.items()}

    def soonest_recovery(self, now: float) -> float | None:
        """The earliest time a cooling-down model becomes available again, for diagnostics.

        None when no unavailable model has a known recovery time (all available,
        only disabled models, or only half-open models with a probe running).
        """
        times = [
            until
            for health in self._health.values()
            if (until := health.unavailable_until(now)) is not None and until != float("inf")
        ]
        return min(times, default=None)

    def reset(self) -> None:
        """Forget all health (config reload): every model healthy with a full budget."""
        for health in self._health.values():
            health.reset()

    def _emit(self, name: str, fields: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(name, {"router_id": self.router_id, **fields})
