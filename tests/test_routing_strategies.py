"""Routing strategies and the latency average: exact picking sequences."""

from __future__ import annotations

import math
from typing import Any

import pytest

from config.models import LanguageModelConfig, LatencyConfig
from routing.latency import MovingAverage
from routing.strategies import (
    LeastLatencyStrategy,
    PriorityStrategy,
    RoundRobinStrategy,
    RoutingStrategy,
    WeightedRoundRobinStrategy,
    build_strategy,
)

ABC = ["a", "b", "c"]


def model(model_id: str, **fields: Any) -> LanguageModelConfig:
    return LanguageModelConfig.model_validate({"id": model_id, "local": {}, **fields})


def firsts(strategy: RoutingStrategy, available: list[str], calls: int) -> str:
    return "".join(strategy.order(available, float(t))[0] for t in range(calls))


# -- MovingAverage -------------------------------------------------------------------


def test_moving_average_is_a_plain_mean_during_warmup_then_an_ema() -> None:
    average = MovingAverage(decay=0.5, warmup_samples=3)
    assert average.value is None and not average.warmed
    average.add(1.0)
    average.add(2.0)
    assert average.value == pytest.approx(1.5)
    assert not average.warmed
    average.add(6.0)
    assert average.value == pytest.approx(3.0)
    assert average.warmed
    average.add(5.0)
    assert average.value == pytest.approx(0.5 * 5.0 + 0.5 * 3.0)
    average.add(1.0)
    assert average.value == pytest.approx(0.5 * 1.0 + 0.5 * 4.0)


def test_moving_average_defaults() -> None:
    average = MovingAverage()
    for _ in range(3):
        average.add(1.0)
    average.add(2.0)
    assert average.value == pytest.approx(0.06 * 2.0 + 0.94 * 1.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_moving_average_ignores_non_positive_and_non_finite_samples(bad: float) -> None:
    average = MovingAverage(decay=0.5, warmup_samples=1)
    average.add(bad)
    assert average.value is None and not average.warmed
    average.add(2.0)
    average.add(bad)
    assert average.value == 2.0
    assert average.samples == 1


def test_moving_average_without_warmup_starts_from_the_first_sample() -> None:
    average = MovingAverage(decay=0.25, warmup_samples=0)
    assert not average.warmed
    average.add(4.0)
    assert average.warmed and average.value == 4.0
    average.add(8.0)
    assert average.value == pytest.approx(5.0)


# -- priority ------------------------------------------------------------------------


def test_priority_keeps_config_order_every_time() -> None:
    strategy = PriorityStrategy()
    assert [strategy.order(ABC, float(t)) for t in range(3)] == [ABC, ABC, ABC]
    assert strategy.order(["b", "c"], 3.0) == ["b", "c"]
    assert strategy.order([], 4.0) == []


# -- round robin ---------------------------------------------------------------------


def test_round_robin_rotates_one_step_per_call() -> None:
    strategy = RoundRobinStrategy(ABC)
    orders = [strategy.order(ABC, float(t)) for t in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_round_robin_skips_unavailable_models_and_shares_the_cursor() -> None:
    strategy = RoundRobinStrategy(ABC)
    assert strategy.order(ABC, 0.0) == ["a", "b", "c"]
    # b would start; it is down, so c starts and the cursor moves past c.
    assert strategy.order(["a", "c"], 1.0) == ["c", "a"]
    assert strategy.order(ABC, 2.0) == ["a", "b", "c"]
    assert strategy.order(["c"], 3.0) == ["c"]
    assert strategy.order(ABC, 4.0) == ["a", "b", "c"]
    assert strategy.order(["a", "c"], 5.0) == ["c", "a"]


def test_round_robin_with_nothing_available_keeps_its_cursor() -> None:
    strategy = RoundRobinStrategy(ABC)
    assert strategy.order(ABC, 0.0)[0] == "a"
    assert strategy.order([], 1.0) == []
    assert strategy.order(ABC, 2.0)[0] == "b"


# -- weighted round robin ------------------------------------------------------------


def test_smooth_wrr_known_sequence() -> None:
    strategy = WeightedRoundRobinStrategy({"a": 5, "b": 1, "c": 1})
    assert firsts(strategy, ABC, 14) == "aabacaa" * 2


def test_smooth_wrr_full_orders_follow_descending_current_weight() -> None:
    strategy = WeightedRoundRobinStrategy({"a": 5, "b": 1, "c": 1})
    orders = [strategy.order(ABC, float(t)) for t in range(7)]
    assert orders == [
        ["a", "b", "c"],
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["a", "c", "b"],
        ["c", "a", "b"],
        ["a", "b", "c"],
        ["a", "b", "c"],
    ]


def test_smooth_wrr_float_weights() -> None:
    strategy = WeightedRoundRobinStrategy({"a": 0.5, "b": 1.5})
    assert firsts(strategy, ["a", "b"], 8) == "babb" * 2
    strategy = WeightedRoundRobinStrategy({"a": 2.5, "b": 1.0})
    picks = firsts(strategy, ["a", "b"], 14)
    assert picks == "abaaaba" * 2
    assert (picks.count("a"), picks.count("b")) == (10, 4)


def test_smooth_wrr_skips_unavailable_models_and_freezes_their_weight() -> None:
    strategy = WeightedRoundRobinStrategy({"a": 5, "b": 1, "c": 1})
    assert strategy.order(ABC, 0.0) == ["a", "b", "c"]
    assert strategy.order(ABC, 1.0) == ["a", "b", "c"]  # current a=-4 b=2 c=2
    assert strategy.order(["b", "c"], 2.0) == ["b", "c"]  # b=3-2=1, c=3
    assert strategy.order(["b", "c"], 3.0) == ["c", "b"]  # b=2, c=4-2=2; a stays -4
    assert strategy.order(ABC, 4.0) == ["b", "c", "a"]  # a=1, b=3-7=-4, c=3
    assert strategy.order(ABC, 5.0) == ["a", "c", "b"]  # a=6-7=-1, b=-3, c=4


def test_smooth_wrr_rejects_non_positive_weights() -> None:
    with pytest.raises(ValueError):
        WeightedRoundRobinStrategy({"a": 1.0, "b": 0.0})


# -- least latency -------------------------------------------------------------------


def warm_up(strategy: LeastLatencyStrategy) -> None:
    """Three cold calls (round robin), then a=1.0, b=0.5 warm and c cold."""
    assert strategy.order(ABC, 0.0) == ["a", "b", "c"]
    assert strategy.order(ABC, 1.0) == ["b", "c", "a"]
    assert strategy.order(ABC, 2.0) == ["c", "a", "b"]
    for model_id, sample in [("a", 1.0), ("a", 1.0), ("b", 0.5), ("b", 0.5), ("c", 0.2)]:
        strategy.observe(model_id, sample, 2.0)


def make_least_latency() -> LeastLatencyStrategy:
    return LeastLatencyStrategy(
        ABC, LatencyConfig(decay=0.5, warmup_samples=2, update_interval=30.0)
    )


def test_least_latency_tries_cold_models_first_then_warm_ones_by_latency() -> None:
    strategy = make_least_latency()
    warm_up(strategy)
    assert strategy.average("a") == 1.0 and strategy.average("c") == 0.2
    # c is still cold (1 of 2 samples): it goes first, then b (0.5) before a (1.0).
    assert strategy.order(ABC, 3.0) == ["c", "b", "a"]


def test_least_latency_orders_warm_models_by_ascending_average() -> None:
    strategy = make_least_latency()
    warm_up(strategy)
    strategy.order(ABC, 3.0)
    strategy.observe("c", 0.3, 3.0)  # c warm at 0.25
    assert strategy.order(ABC, 4.0) == ["c", "b", "a"]
    assert strategy.order(ABC, 5.0) == ["c", "b", "a"]
    assert strategy.order(["a", "b"], 6.0) == ["b", "a"]
    strategy.observe("b", 0.1, 6.0)  # EMA: 0.5*0.1 + 0.5*0.5 = 0.3
    strategy.observe("c", 0.45, 6.0)  # EMA: 0.5*0.45 + 0.5*0.25 = 0.35
    assert strategy.order(ABC, 7.0) == ["b", "c", "a"]


def test_least_latency_reprobes_a_model_not_picked_for_update_interval() -> None:
    strategy = make_least_latency()
    warm_up(strategy)
    strategy.order(ABC, 3.0)
    strategy.observe("c", 0.3, 3.0)
    assert strategy.order(ABC, 5.0) == ["c", "b", "a"]
    # a was last picked first at t=0, b at t=1, c at t=5.
    assert strategy.order(ABC, 30.0) == ["c", "b", "a"]  # a: 30 s ago, not more
    assert strategy.order(ABC, 30.5) == ["a", "c", "b"]  # a: 30.5 s ago: re-probe
    assert strategy.order(ABC, 31.0) == ["c", "b", "a"]  # b: exactly 30 s ago
    assert strategy.order(ABC, 31.5) == ["b", "c", "a"]  # b: 30.5 s ago: re-probe
    assert strategy.order(ABC, 32.0) == ["c", "b", "a"]


def test_least_latency_reprobes_the_longest_unpicked_model_first() -> None:
    strategy = LeastLatencyStrategy(
        ["a", "b"], LatencyConfig(decay=0.5, warmup_samples=1, update_interval=10.0)
    )
    # Both warmed by samples alone (e.g. as fallbacks): neither was ever picked first.
    strategy.observe("b", 0.1, 0.0)
    strategy.observe("a", 0.2, 0.0)
    assert strategy.order(["a", "b"], 0.0) == ["a", "b"]
    assert strategy.order(["a", "b"], 1.0) == ["b", "a"]
    assert strategy.order(["a", "b"], 2.0) == ["b", "a"]
    assert strategy.order(["a", "b"], 11.5) == ["a", "b"]  # a picked at 0, b at 2


def test_least_latency_cold_round_robin_skips_unavailable_models() -> None:
    strategy = make_least_latency()
    assert strategy.order(["b", "c"], 0.0) == ["b", "c"]
    assert strategy.order(ABC, 1.0) == ["c", "a", "b"]
    assert strategy.order(ABC, 2.0) == ["a", "b", "c"]
    assert strategy.order([], 3.0) == []


# -- build_strategy ------------------------------------------------------------------


def test_build_strategy_by_name() -> None:
    models = [model("a", weight=5), model("b"), model("c")]
    assert isinstance(build_strategy("priority", models), PriorityStrategy)
    round_robin = build_strategy("round_robin", models)
    assert isinstance(round_robin, RoundRobinStrategy)
    assert firsts(round_robin, ABC, 4) == "abca"
    weighted = build_strategy("weighted_round_robin", models)
    assert isinstance(weighted, WeightedRoundRobinStrategy)
    assert firsts(weighted, ABC, 7) == "aabacaa"
    with pytest.raises(ValueError, match="fastest"):
        build_strategy("fastest", models)


def test_build_least_latency_uses_each_models_latency_settings() -> None:
    models = [
        model("a", latency={"warmup_samples": 1, "decay": 0.5}),
        model("b", latency={"warmup_samples": 3}),
    ]
    strategy = build_strategy("least_latency", models)
    assert isinstance(strategy, LeastLatencyStrategy)
    strategy.observe("a", 1.0, 0.0)
    strategy.observe("b", 0.1, 0.0)
    # a is warm after one sample; b needs three, so b (cold) still goes first.
    assert strategy.order(["a", "b"], 0.0) == ["b", "a"]
    strategy.observe("a", 3.0, 0.0)
    assert strategy.average("a") == pytest.approx(2.0)
