"""A language router: its models' providers behind failover, retry and deadlines.

`ChatRouter.stream(request)` -> Observable of `ChatChunk | Reset` (one answer,
from whichever model succeeds); `ChatRouter.complete(request)` -> Observable of
one `ChatCompletion`. Pipelines depend on these observables, not on providers.
Both take `only_model=` to pin one model: the same retry, deadlines and health,
with failover restricted to that model.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops

from config.models import LanguageModelConfig, LanguageRouterConfig
from observability.telemetry import RequestTelemetry
from operators.aio import from_async_iterable, from_awaitable
from operators.attempt import Deadlines, OutputRule, Watch, guard_attempt
from operators.deadlines import deadlines, require_output
from operators.failover import Reset, RouterHealth, failover, retry_passes
from operators.instrument import instrument_attempt
from protocol.chat import ChatRequest
from providers.types import ChatDelta, ChatProvider, ChatResult


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which model served (part of) an answer, in Glide's terms."""

    model_id: str
    provider_id: str
    model_name: str


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """One streamed piece of an answer and the model that produced it."""

    model: ModelInfo
    delta: ChatDelta


@dataclass(frozen=True, slots=True)
class ChatCompletion:
    """A whole answer and the model that produced it."""

    model: ModelInfo
    result: ChatResult


ChatEvent = ChatChunk | Reset


class ChatRouter:
    """One configured language router (providers built by the caller)."""

    def __init__(
        self,
        config: LanguageRouterConfig,
        providers: Mapping[str, ChatProvider],
        health: RouterHealth,
        rng: random.Random,
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        self.config = config
        self.id = config.id
        self.health = health
        self._providers = dict(providers)
        self._models = {m.id: m for m in config.enabled_models}
        self._rng = rng
        self._scheduler = scheduler

    def model_info(self, model_id: str) -> ModelInfo:
        """Glide's ids for one model."""
        provider = self._providers[model_id]
        return ModelInfo(model_id, provider.provider_id, provider.model_name)

    def has_model(self, model_id: str) -> bool:
        """Whether `model_id` is one of this router's enabled models."""
        return model_id in self._models

    def _health_for(self, only_model: str | None) -> RouterHealth:
        if only_model is None:
            return self.health
        if only_model not in self._models:
            raise KeyError(f"router {self.id!r} has no enabled model {only_model!r}")
        return PinnedHealth(self.health, only_model)

    def stream(
        self,
        request: ChatRequest,
        *,
        telemetry: RequestTelemetry | None = None,
        only_model: str | None = None,
    ) -> Observable[ChatEvent]:
        """The streamed answer: chunks of one model, `Reset` before each restart.

        Each attempt runs under the model's first-chunk, idle and overall
        deadlines; an attempt that ends without content is a failure. The chunk
        that carries a finish_reason settles the attempt as a success (health,
        latency, telemetry) before it travels on. `telemetry` hears each attempt.
        `only_model` pins the answer to that model (KeyError if it is not enabled).
        """
        health = self._health_for(only_model)

        def attempt(model_id: str) -> Observable[ChatEvent]:
            model = self._models[model_id]
            provider = self._providers[model_id]
            info = self.model_info(model_id)
            params = request.params_for(model_id, provider.model_name)

            def tag(delta: ChatDelta) -> ChatEvent:
                return ChatChunk(info, delta)

            deltas: Observable[ChatDelta] = from_async_iterable(lambda: provider.stream(params))
            watch = (
                Watch(telemetry, model_id, provider.provider_id, _is_final_chunk)
                if telemetry is not None
                else None
            )
            # deadlines, the output rule, the tag and telemetry: one operator per attempt
            return deltas.pipe(
                guard_attempt(
                    deadlines=_attempt_deadlines(model),
                    output=CHUNK_OUTPUT,
                    tag=tag,
                    watch=watch,
                    scheduler=self._scheduler,
                )
            )

        return failover(
            self.id, health, attempt, scheduler=self._scheduler, is_final=_is_final_chunk
        ).pipe(retry_passes(self.config.retry, self._rng, scheduler=self._scheduler))

    def complete(
        self,
        request: ChatRequest,
        *,
        telemetry: RequestTelemetry | None = None,
        only_model: str | None = None,
    ) -> Observable[ChatCompletion]:
        """The whole answer of the first model that gives one (same failover).

        `only_model` pins the answer to that model (KeyError if it is not enabled).
        """
        health = self._health_for(only_model)

        def attempt(model_id: str) -> Observable[ChatCompletion]:
            model = self._models[model_id]
            provider = self._providers[model_id]
            info = self.model_info(model_id)
            params = request.params_for(model_id, provider.model_name)
            timeout = model.client.timeout

            def tag(result: ChatResult) -> ChatCompletion:
                return ChatCompletion(info, result)

            results: Observable[ChatResult] = from_awaitable(lambda: provider.complete(params))
            return results.pipe(
                deadlines(timeout, timeout, timeout, what="response", scheduler=self._scheduler),
                require_output(_result_has_content, what="content"),
                ops.map(tag),
                instrument_attempt(telemetry, model_id, provider.provider_id),
            )

        def completions(event: ChatCompletion | Reset) -> Observable[ChatCompletion]:
            # one item per attempt, emitted at its end: a Reset cannot follow it
            return reactivex.of(event) if isinstance(event, ChatCompletion) else reactivex.empty()

        routed = failover(self.id, health, attempt, scheduler=self._scheduler).pipe(
            retry_passes(self.config.retry, self._rng, scheduler=self._scheduler)
        )
        return routed.pipe(ops.flat_map(completions))


class PinnedHealth:
    """A router's health restricted to one model: the plan holds that model or nothing.

    Everything else (availability, outcomes) goes to the router's own health, so
    a pinned request counts toward the model's error budget like any other.
    """

    def __init__(self, base: RouterHealth, model_id: str) -> None:
        self._base = base
        self.model_id = model_id

    def plan(self, now: float) -> list[str]:
        """The pinned model, or nothing while it is unavailable.

        The base plan is not asked: a strategy's order may move on when asked
        (round robin), and a pinned request must not shift the others' turns.
        """
        return [self.model_id] if self._base.available(self.model_id, now) else []

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


def _has_content(delta: ChatDelta) -> bool:
    # a provider's content filter is an answer, not an empty one: the client is told
    return bool(delta.content) or delta.finish_reason == "content_filtered"


def _is_final(delta: ChatDelta) -> bool:
    return delta.finish_reason is not None


def _is_final_chunk(event: ChatEvent) -> bool:
    return isinstance(event, ChatChunk) and event.delta.finish_reason is not None


def _result_has_content(result: ChatResult) -> bool:
    return bool(result.content) or result.finish_reason == "content_filtered"


CHUNK_OUTPUT: OutputRule[ChatDelta] = OutputRule(_has_content, _is_final, "content")
"""A streamed answer must carry content before its final chunk (or its end)."""


def _attempt_deadlines(model: LanguageModelConfig) -> Deadlines:
    client = model.client
    return Deadlines(client.first_chunk_timeout, client.idle_timeout, client.timeout, "chunk")
