"""A router's health for one request that only some of its models can serve
(capabilities, an embedding router's interchangeable subset)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from operators.failover import RouterHealth


class OnlyModels:
    """A router's health for a request only some models can serve (capabilities):
    the plan keeps just those models, in the strategy's order; the rest goes to
    the router's own health."""

    def __init__(self, base: RouterHealth, allowed: frozenset[str]) -> None:
        self._base = base
        self.allowed = allowed

    def plan(self, now: float) -> list[str]:
        """The base plan without the models that cannot serve the request."""
        return [model for model in self._base.plan(now) if model in self.allowed]

    def available(self, model_id: str, now: float) -> bool:
        """As the base says."""
        return self._base.available(model_id, now)

    def begin_attempt(self, model_id: str, now: float) -> None:
        """As the base."""
        self._base.begin_attempt(model_id, now)

    def record_success(self, model_id: str, now: float, latency: float | None) -> None:
        """As the base."""
        self._base.record_success(model_id, now, latency)

    def record_failure(self, model_id: str, error: BaseException, now: float) -> None:
        """As the base."""
        self._base.record_failure(model_id, error, now)

    def cancel_attempt(self, model_id: str, now: float) -> None:
        """As the base."""
        self._base.cancel_attempt(model_id, now)
