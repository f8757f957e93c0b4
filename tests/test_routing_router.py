"""ModelRouter: plans over healthy models, health bookkeeping, diagnostics, events."""

from __future__ import annotations

from typing import Any

import pytest

from config.models import LanguageModelConfig
from providers.types import ErrorCategory, ProviderError
from routing.router import ModelRouter
from routing.strategies import LeastLatencyStrategy, PriorityStrategy, RoundRobinStrategy


def model(model_id: str, **fields: Any) -> LanguageModelConfig:
    return LanguageModelConfig.model_validate(
        {"id": model_id, "local": {}, "error_budget": "1/m", **fields}
    )


MODELS = [model("a"), model("b", health={"cooldown": 5}), model("c")]


def transient() -> ProviderError:
    return ProviderError(ErrorCategory.TRANSIENT, "503", status=503)


def test_plan_orders_only_available_models() -> None:
    router = ModelRouter("r1", MODELS, RoundRobinStrategy(["a", "b", "c"]))
    assert router.model_ids == ["a", "b", "c"]
    assert router.plan(0.0) == ["a", "b", "c"]
    router.record_failure("b", transient(), 0.5)
    assert not router.available("b", 1.0)
    assert router.plan(1.0) == ["c", "a"]
    assert router.health_states(1.0) == {"a": "healthy", "b": "unhealthy", "c": "healthy"}


def test_plan_is_empty_when_nothing_is_available() -> None:
    router = ModelRouter("r1", MODELS, PriorityStrategy())
    for model_id in ("a", "b", "c"):
        router.record_failure(model_id, transient(), 0.0)
    assert router.plan(1.0) == []
    assert router.soonest_recovery(1.0) == 5.0  # b's cooldown is 5 s, the others 10 s
    assert router.plan(5.0) == ["b"]


def test_half_open_model_leaves_the_plan_once_its_probe_begins() -> None:
    router = ModelRouter("r1", MODELS, PriorityStrategy())
    router.record_failure("a", transient(), 0.0)
    assert router.plan(10.0) == ["a", "b", "c"]
    router.begin_attempt("a", 10.0)
    assert router.plan(10.0) == ["b", "c"]
    assert router.health_states(10.0)["a"] == "half_open"
    router.record_success("a", 11.0, latency=None)
    assert router.plan(11.0) == ["a", "b", "c"]
    router.record_failure("a", transient(), 30.0)
    router.begin_attempt("a", 40.0)
    router.cancel_attempt("a", 41.0)
    assert router.plan(41.0) == ["a", "b", "c"]


def test_soonest_recovery_ignores_disabled_and_healthy_models() -> None:
    router = ModelRouter("r1", MODELS, PriorityStrategy())
    assert router.soonest_recovery(0.0) is None
    router.record_failure("a", ProviderError(ErrorCategory.AUTH, "bad key", status=401), 0.0)
    assert router.soonest_recovery(0.0) is None
    router.record_failure(
        "c", ProviderError(ErrorCategory.RATE_LIMITED, "slow", retry_after=3.0), 1.0
    )
    router.record_failure("b", transient(), 2.0)
    assert router.soonest_recovery(2.0) == 4.0
    assert router.soonest_recovery(4.0) == 7.0
    assert router.soonest_recovery(7.0) is None


def test_events_carry_the_router_id() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    router = ModelRouter(
        "r1", MODELS, PriorityStrategy(), on_event=lambda n, f: events.append((n, f))
    )
    router.record_failure("b", ProviderError(ErrorCategory.AUTH, "bad key", status=403), 0.0)
    router.record_failure("b", ProviderError(ErrorCategory.AUTH, "bad key", status=403), 1.0)
    assert [(name, fields["router_id"], fields["model_id"]) for name, fields in events] == [
        ("model_disabled", "r1", "b")
    ]


def test_success_latency_feeds_the_strategy() -> None:
    strategy = LeastLatencyStrategy(["a", "b", "c"], MODELS[0].latency)
    router = ModelRouter("r1", MODELS, strategy)
    router.record_success("b", 0.0, latency=0.4)
    router.record_success("b", 0.0, latency=None)
    router.record_success("b", 0.0, latency=0.6)
    assert strategy.average("b") == pytest.approx(0.5)
    assert strategy.average("a") is None


def test_reset_restores_every_model() -> None:
    router = ModelRouter("r1", MODELS, PriorityStrategy(), now=100.0)
    router.record_failure("a", ProviderError(ErrorCategory.AUTH, "bad key"), 100.0)
    router.record_failure("b", transient(), 100.0)
    router.reset()
    assert router.plan(100.0) == ["a", "b", "c"]


def test_duplicate_or_unknown_model_ids_are_errors() -> None:
    with pytest.raises(ValueError):
        ModelRouter("r1", [model("a"), model("a")], PriorityStrategy())
    router = ModelRouter("r1", MODELS, PriorityStrategy())
    with pytest.raises(KeyError):
        router.record_failure("zz", transient(), 0.0)
