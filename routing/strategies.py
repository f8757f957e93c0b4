"""Routing strategies: the order in which one request tries the available models.

Every strategy gets the ids of the models that are available right now (in config
order) and returns a permutation of them; the request tries them first to last.
A strategy's state advances once per `order` call that has something to order
(an empty list leaves it untouched). Strategies know model ids only, so the same
code routes chat, speak and listen. Time flows in as `now` (scheduler seconds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from config.models import LatencyConfig, ModelBase
from routing.latency import MovingAverage


class RoutingStrategy(Protocol):
    """The shape every strategy has.

    `order(available, now)`: ids available at `now`, in config order, flow in; the
    same ids in the order to try them flow out. `observe(model_id, latency, now)`:
    the latency (seconds) of a successful attempt flows in; most strategies ignore it.
    """

    def order(self, available: Sequence[str], now: float) -> list[str]:
        """Return `available` in the order this request should try them."""
        ...

    def observe(self, model_id: str, latency: float, now: float) -> None:
        """Take a latency sample of a successful attempt on `model_id`."""
        ...


def _ring_from(
    ring: Sequence[str], cursor: int, candidates: Sequence[str]
) -> tuple[list[str], int]:
    """Candidates in ring order starting at the first one at or after `cursor`.

    Out: the rotated candidates (ids not on the ring go last, in their given
    order) and the index on the ring of the chosen start (-1 when none is on it).
    """
    wanted = set(candidates)
    size = len(ring)
    start = -1
    for step in range(size):
        index = (cursor + step) % size
        if ring[index] in wanted:
            start = index
            break
    rotated: list[str] = []
    if start >= 0:
        rotated = [ring[(start + step) % size] for step in range(size)]
        rotated = [model_id for model_id in rotated if model_id in wanted]
    on_ring = set(ring)
    rotated.extend(model_id for model_id in candidates if model_id not in on_ring)
    return rotated, start


class PriorityStrategy:
    """Config order, every time: `[a, b, c] -> [a, b, c]`."""

    def order(self, available: Sequence[str], now: float) -> list[str]:
        """Return `available` unchanged (config order)."""
        return list(available)

    def observe(self, model_id: str, latency: float, now: float) -> None:
        """Ignored."""


class RoundRobinStrategy:
    """One cursor over all configured ids; each call starts one model further.

    With models a, b, c the calls return `[a,b,c]`, `[b,c,a]`, `[c,a,b]`, `[a,b,c]`...
    An unavailable model is skipped: if b is down on the second call it returns
    `[c, a]`, and the third call starts again at a.
    """

    def __init__(self, model_ids: Sequence[str]) -> None:
        self.model_ids = list(model_ids)
        self._cursor = 0

    def order(self, available: Sequence[str], now: float) -> list[str]:
        """Rotate `available` to start at the next model after the previous start."""
        rotated, start = _ring_from(self.model_ids, self._cursor, available)
        if start >= 0:
            self._cursor = (start + 1) % len(self.model_ids)
        return rotated

    def observe(self, model_id: str, latency: float, now: float) -> None:
        """Ignored."""


class WeightedRoundRobinStrategy:
    """nginx's smooth weighted round robin over the available models.

    Each call adds every available model's weight to its current weight, picks the
    largest (ties: config order) to go first and takes the total available weight
    off it; the other models follow in descending current weight. Weights may be
    floats; an id without a weight counts as 1.0. Unavailable models keep their
    current weight. With a=5, b=1, c=1 the first picks run `a a b a c a a`, repeating.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        for model_id, weight in weights.items():
            if not weight > 0:
                raise ValueError(f"model {model_id!r} needs a positive weight")
        self.weights = dict(weights)
        self._current: dict[str, float] = dict.fromkeys(self.weights, 0.0)

    def order(self, available: Sequence[str], now: float) -> list[str]:
        """Return the smooth-WRR pick first, then the rest by current weight."""
        if not available:
            return []
        total = 0.0
        for model_id in available:
            weight = self.weights.get(model_id, 1.0)
            self._current[model_id] = self._current.get(model_id, 0.0) + weight
            total += weight
        # max() keeps the first of equal candidates: ties go to config order, as in nginx.
        best = max(available, key=lambda model_id: self._current[model_id])
        self._current[best] -= total
        rank = {model_id: index for index, model_id in enumerate(available)}
        rest = sorted(
            (model_id for model_id in available if model_id != best),
            key=lambda model_id: (-self._current[model_id], rank[model_id]),
        )
        return [best, *rest]

    def observe(self, model_id: str, latency: float, now: float) -> None:
        """Ignored."""


class LeastLatencyStrategy:
    """Fastest model first, by a moving average of observed latencies.

    Per call, the first model is chosen by these rules, in turn:

    1. cold models (average not yet warmed up) go first, taken round robin over
       the configured ids, then the warm ones;
    2. otherwise a model not picked first for more than `update_interval` seconds
       (or never) goes first so its figure stays fresh (the longest-unpicked one);
    3. otherwise the lowest average goes first.

    The models after the first follow in ascending average latency (ties: config
    order). `latency` is one `LatencyConfig` for all models or one per model id.
    """

    def __init__(
        self,
        model_ids: Sequence[str],
        latency: LatencyConfig | Mapping[str, LatencyConfig],
    ) -> None:
        self.model_ids = list(model_ids)
        self._configs = latency
        self._averages: dict[str, MovingAverage] = {}
        self._last_picked: dict[str, float] = {}
        self._cursor = 0
        for model_id in self.model_ids:
            self._average(model_id)

    def _config(self, model_id: str) -> LatencyConfig:
        if isinstance(self._configs, LatencyConfig):
            return self._configs
        return self._configs.get(model_id) or LatencyConfig.model_validate({})

    def _average(self, model_id: str) -> MovingAverage:
        average = self._averages.get(model_id)
        if average is None:
            config = self._config(model_id)
            average = MovingAverage(config.decay, config.warmup_samples)
            self._averages[model_id] = average
        return average

    def average(self, model_id: str) -> float | None:
        """The current moving average of `model_id` (None before any sample)."""
        return self._average(model_id).value

    def order(self, available: Sequence[str], now: float) -> list[str]:
        """Return `available` cold-first, then stale-first, then fastest-first."""
        if not available:
            return []
        rank = {model_id: index for index, model_id in enumerate(available)}
        cold = [m for m in available if not self._average(m).warmed]
        warm = [m for m in available if self._average(m).warmed]
        warm.sort(key=lambda m: (self._latency(m), rank[m]))
        if cold:
            rotated, start = _ring_from(self.model_ids, self._cursor, cold)
            if start >= 0:
                self._cursor = (start + 1) % len(self.model_ids)
            ordered = [*rotated, *warm]
        else:
            stale = [m for m in warm if self._stale(m, now)]
            if stale:
                first = min(stale, key=lambda m: (self._last_picked.get(m, float("-inf")), rank[m]))
                ordered = [first, *(m for m in warm if m != first)]
            else:
                ordered = warm
        self._last_picked[ordered[0]] = now
        return ordered

    def _latency(self, model_id: str) -> float:
        value = self._average(model_id).value
        return math.inf if value is None else value

    def _stale(self, model_id: str, now: float) -> bool:
        last = self._last_picked.get(model_id)
        return last is None or now - last > self._config(model_id).update_interval

    def observe(self, model_id: str, latency: float, now: float) -> None:
        """Fold a successful attempt's latency (seconds) into `model_id`'s average."""
        self._average(model_id).add(latency)


STRATEGY_NAMES: tuple[str, ...] = (
    "priority",
    "round_robin",
    "weighted_round_robin",
    "least_latency",
)


def build_strategy(name: str, models: Sequence[ModelBase]) -> RoutingStrategy:
    """A router's strategy by its config name, over `models` (config order).

    In: `priority`, `round_robin`, `weighted_round_robin` (weights from each
    model's `weight`) or `least_latency` (each model's `latency` settings).
    Out: a fresh strategy. An unknown name raises ValueError.
    """
    ids = [model.id for model in models]
    if name == "priority":
        return PriorityStrategy()
    if name == "round_robin":
        return RoundRobinStrategy(ids)
    if name == "weighted_round_robin":
        return WeightedRoundRobinStrategy({model.id: model.weight for model in models})
    if name == "least_latency":
        return LeastLatencyStrategy(ids, {model.id: model.latency for model in models})
    raise ValueError(f"unknown routing strategy {name!r} (one of {', '.join(STRATEGY_NAMES)})")
