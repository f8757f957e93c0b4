"""An embedding router: its models' providers behind failover, retry and deadlines.

`EmbeddingRouter.embed(request)` -> Observable of one `Embeddings` (all the
request's vectors, from one model):

    attempt(m1): ----#          attempt(m2): ------v|
    embed:       ----------------------------------v|

Each attempt embeds every input on one model (split into the vendor's batches,
sent in parallel, put back in order); a failed attempt moves to the next model
with the same strategy, health, error budget, retry passes and request budget
as a language router (`operators.failover`). A whole answer comes from one model,
never a mix. The request's `dimensions` is a capability: models whose adapter
cannot shorten vectors are skipped; when none can, `CapabilityUnavailable`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass

from reactivex import Observable, abc

from config.models import EmbeddingModelConfig, EmbeddingRouterConfig
from observability.telemetry import RequestTelemetry
from operators.aio import from_awaitable
from operators.attempt import Deadlines, OutputRule, Watch, guard_attempt
from operators.failover import Budget, Recovery, RouterHealth, failover, retry_passes
from protocol.frames import ErrorName
from providers.embed_types import EmbeddingProvider, EmbedRequest, EmbedResult, embed_in_batches
from providers.types import ErrorCategory, ProviderError
from routing.only_models import OnlyModels

log = logging.getLogger("sluice.embedding")

UNSUPPORTED_CAPABILITY = ErrorName.UNSUPPORTED_CAPABILITY
"""The error name of a request no model of the router can serve (HTTP 400)."""


class CapabilityUnavailable(Exception):
    """No enabled model of `router_id` has `capability` (e.g. `dimensions`)."""

    def __init__(self, router_id: str, capability: str, detail: str) -> None:
        super().__init__(f"no model of embedding router {router_id!r} supports {detail}")
        self.router_id = router_id
        self.capability = capability


@dataclass(frozen=True, slots=True)
class Embeddings:
    """A request's vectors (input order) and the model that made them."""

    model_id: str
    provider_id: str
    model_name: str
    vectors: list[list[float]]
    tokens: int


def _has_vectors(result: Embeddings) -> bool:
    return bool(result.vectors)


EMBED_OUTPUT: OutputRule[Embeddings] = OutputRule(_has_vectors, None, "vectors")
"""An attempt must answer with vectors."""


def _final(_: Embeddings) -> bool:
    return True


class EmbeddingRouter:
    """One configured embedding router (providers built by the caller)."""

    def __init__(
        self,
        config: EmbeddingRouterConfig,
        providers: Mapping[str, EmbeddingProvider],
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
        self._shortens = {m.id: _shortens(m, self._providers[m.id]) for m in config.enabled_models}
        recovery = getattr(health, "unavailable_until", None)
        self._recovery: Recovery | None = recovery if callable(recovery) else None

    @property
    def models(self) -> list[EmbeddingModelConfig]:
        """The enabled models in config order."""
        return list(self._models.values())

    def provider(self, model_id: str) -> EmbeddingProvider:
        """The adapter of one model (KeyError for an unknown id)."""
        return self._providers[model_id]

    def has_model(self, model_id: str) -> bool:
        """Whether `model_id` is one of this router's enabled models."""
        return model_id in self._models

    def eligible(self, request: EmbedRequest, only_model: str | None = None) -> list[str]:
        """The models that can serve `request` (all of them, or only `only_model`);
        raises `CapabilityUnavailable` when none can, KeyError for an unknown pin."""
        if only_model is not None and only_model not in self._models:
            raise KeyError(f"embedding router {self.id!r} has no enabled model {only_model!r}")
        ids = [only_model] if only_model is not None else list(self._models)
        if request.dimensions is not None:
            ids = [m for m in ids if self._shortens[m]]
            if not ids:
                raise CapabilityUnavailable(
                    self.id, "dimensions", f"`dimensions` (shortened vectors){_pin(only_model)}"
                )
        return ids

    def embed(
        self,
        request: EmbedRequest,
        *,
        telemetry: RequestTelemetry | None = None,
        only_model: str | None = None,
    ) -> Observable[Embeddings]:
        """The request's vectors from the first model that answers (module doc).

        Raises `CapabilityUnavailable` (at once, not through the observable) when
        no model can serve the request. Errors of the observable:
        `AllModelsUnavailable`, or a non-retryable `ProviderError` (the input
        itself was refused).
        """
        ids = self.eligible(request, only_model)
        health: RouterHealth = self.health
        if len(ids) != len(self._models):
            health = OnlyModels(self.health, frozenset(ids))
        deadline = self.config.deadline

        def subscribe(
            observer: abc.ObserverBase[Embeddings], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            budget = Budget(deadline, ids, self._recovery)

            def attempt(model_id: str) -> Observable[Embeddings]:
                return self._attempt(request, model_id, telemetry, budget)

            routed = failover(
                self.id,
                health,
                attempt,
                scheduler=self._scheduler,
                is_final=_final,
                budget=budget,
            ).pipe(
                retry_passes(self.config.retry, self._rng, scheduler=self._scheduler, budget=budget)
            )
            return routed.subscribe(observer, scheduler=scheduler_)  # type: ignore[arg-type]

        return Observable(subscribe)

    def _attempt(
        self,
        request: EmbedRequest,
        model_id: str,
        telemetry: RequestTelemetry | None,
        budget: Budget,
    ) -> Observable[Embeddings]:
        model = self._models[model_id]
        provider = self._providers[model_id]
        expected = request.dimensions or model.dimensions

        async def call() -> Embeddings:
            result = await embed_in_batches(provider, request, model.max_parallel)
            check_dimensions(result, expected, f"{provider.provider_id}/{provider.model_name}")
            return Embeddings(
                model_id, provider.provider_id, provider.model_name, result.vectors, result.tokens
            )

        client = model.client
        limits = Deadlines(client.timeout, client.timeout, client.timeout, "answer", budget.end)
        watch = (
            Watch(telemetry, model_id, provider.provider_id, _final)
            if telemetry is not None
            else None
        )
        return from_awaitable(call).pipe(
            guard_attempt(
                deadlines=limits, output=EMBED_OUTPUT, watch=watch, scheduler=self._scheduler
            )
        )


def check_dimensions(result: EmbedResult, expected: int | None, label: str) -> None:
    """Every vector of `result` has `expected` values (or, with None, as many as the
    first); otherwise a PROTOCOL error, so the attempt fails over."""
    if not result.vectors:
        return
    size = expected or len(result.vectors[0])
    for vector in result.vectors:
        if len(vector) != size:
            raise ProviderError(
                ErrorCategory.PROTOCOL,
                f"{label}: a vector has {len(vector)} dimensions, {size} expected",
            )


def _shortens(model: EmbeddingModelConfig, provider: EmbeddingProvider) -> bool:
    declared = bool(provider.dimensions)
    override = model.capabilities.dimensions
    if override is None:
        return declared
    if override and not declared:
        log.warning(
            "capabilities.dimensions ignored: this vendor cannot shorten vectors",
            extra={"model": model.id, "provider": model.provider_key},
        )
        return False
    return override


def _pin(only_model: str | None) -> str:
    return f" (model {only_model!r})" if only_model is not None else ""
