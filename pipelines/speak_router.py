"""A speech router's speak models behind failover, retry passes and deadlines.

`SpeakRouter.segment(text, voice, sample_rate, context_id, health)` -> Observable
of `SegmentAudio | Reset`: one sentence's audio at `sample_rate`, from whichever
model succeeds; a `Reset` names a model that failed after sending some of it.
Pipelines depend on this observable, not on providers (tests hand in a
`SourceFactory` of cold observables).

    sentence ─► failover(models: source ─► deadlines ─► require audio ─►
        resample_chunks ─► tag) ─► retry_passes ─► audio of the sentence
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from reactivex import Observable, abc
from reactivex import operators as ops

from config.models import (
    ElevenLabsConfig,
    EspeakConfig,
    OpenAISpeechConfig,
    SpeakModelConfig,
    SpeakSection,
    SpeechRouterConfig,
)
from observability.logs import safe_extra
from observability.telemetry import RequestTelemetry
from operators.aio import from_async_iterable
from operators.deadlines import deadlines, require_output
from operators.failover import Reset, RouterHealth, failover, retry_passes
from operators.instrument import instrument_attempt
from operators.resample import resample_chunks
from protocol.speak import Voice
from providers.tts_types import Int16Array, PcmChunk, SpeechProvider, SpeechRequest
from routing.router import HealthShare, ModelRouter, build_model_router
from routing.strategies import build_strategy

log = logging.getLogger("sluice.speak")

SourceFactory = Callable[[str, SpeechRequest], Observable[PcmChunk]]
"""(model id, request) -> that model's PCM chunks (tests hand in cold observables)."""


@dataclass(frozen=True, slots=True)
class SegmentAudio:
    """Audio of the sentence in progress, already at the request's sample rate (mono)."""

    model_id: str
    samples: Int16Array


SegmentItem = SegmentAudio | Reset


class StickyHealth:
    """One request's view of the router's health: models that failed it go last.

    After a mid-sentence failure, the rest of the request is synthesized on the
    next model; the failed one is still tried, last, should every other fail.
    """

    def __init__(self, base: RouterHealth) -> None:
        self._base = base
        self.failed: list[str] = []

    def plan(self, now: float) -> list[str]:
        """The base plan with this request's failed models moved to the end."""
        plan = self._base.plan(now)
        return [m for m in plan if m not in self.failed] + [m for m in plan if m in self.failed]

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
        """Remember the failure for this request, and tell the base."""
        if model_id not in self.failed:
            self.failed.append(model_id)
        self._base.record_failure(model_id, error, now)

    def cancel_attempt(self, model_id: str, now: float) -> None:
        """As the base."""
        self._base.cancel_attempt(model_id, now)


def _has_audio(chunk: PcmChunk) -> bool:
    return chunk.samples.size > 0


class SpeakRouter:
    """A speech router's speak models behind failover, retry passes and deadlines.

    `segment(text, voice, sample_rate, context_id, health)` -> Observable of
    `SegmentAudio | Reset`: one sentence's audio at `sample_rate`, from whichever
    model succeeds. Pipelines depend on this observable, not on providers.
    """

    def __init__(
        self,
        config: SpeechRouterConfig,
        providers: Mapping[str, SpeechProvider],
        health: RouterHealth,
        rng: random.Random,
        scheduler: abc.SchedulerBase | None = None,
        source: SourceFactory | None = None,
    ) -> None:
        if config.speak is None:
            raise ValueError(f"speech router {config.id!r} has no speak section")
        self.config = config
        self.section: SpeakSection = config.speak
        self.id = config.id
        self.health = health
        self.providers = dict(providers)
        self._models = {m.id: m for m in self.section.models if m.enabled}
        self._rng = rng
        self._scheduler = scheduler
        self._source = source or self._provider_source

    @property
    def models(self) -> list[SpeakModelConfig]:
        """The enabled speak models, in config order."""
        return list(self._models.values())

    def _provider_source(self, model_id: str, request: SpeechRequest) -> Observable[PcmChunk]:
        provider = self.providers[model_id]
        return from_async_iterable(lambda: provider.synthesize(request))

    def provider_id(self, model_id: str) -> str:
        """The provider key of `model_id` (e.g. "local")."""
        return self._models[model_id].provider_key

    def voice_for(self, model_id: str, requested: Voice) -> str | None:
        """The voice `model_id` should use (None: the provider's configured one)."""
        if isinstance(requested, dict):
            voice = requested.get(model_id) or requested.get(self.provider_id(model_id))
        else:
            voice = requested
        return voice or self.section.voice

    def native_rate(self, model_id: str, preferred: int) -> int:
        """The rate `model_id` produces for a client that wants `preferred` Hz."""
        provider = self.providers.get(model_id)
        return provider.sample_rate_for(preferred) if provider is not None else preferred

    def segment(
        self,
        text: str,
        voice: Voice,
        sample_rate: int,
        context_id: str,
        health: RouterHealth,
        telemetry: RequestTelemetry | None = None,
    ) -> Observable[SegmentItem]:
        """One sentence's audio at `sample_rate`, with failover across the models.

        Each attempt runs under the model's first-chunk, idle and overall
        deadlines; an attempt that ends with no audio is a failure. `telemetry`
        (the request's) hears each attempt.
        """

        def attempt(model_id: str) -> Observable[SegmentItem]:
            client = self._models[model_id].client
            request = SpeechRequest(
                text,
                self.voice_for(model_id, voice),
                self.native_rate(model_id, sample_rate),
                f"{context_id}:{model_id}",
            )

            def tag(samples: Int16Array) -> SegmentItem:
                return SegmentAudio(model_id, samples)

            return self._source(model_id, request).pipe(
                deadlines(
                    client.first_chunk_timeout,
                    client.idle_timeout,
                    client.timeout,
                    what="audio",
                    scheduler=self._scheduler,
                ),
                require_output(_has_audio, what="audio"),
                resample_chunks(sample_rate),
                ops.map(tag),
                instrument_attempt(telemetry, model_id, self.provider_id(model_id)),
            )

        return failover(self.id, health, attempt, scheduler=self._scheduler).pipe(
            retry_passes(self.config.retry, self._rng, scheduler=self._scheduler)
        )


def build_speak_provider(model: SpeakModelConfig, session: aiohttp.ClientSession) -> SpeechProvider:
    """The adapter for `model`'s provider block (local, openai or elevenlabs)."""
    block = model.provider_config
    if isinstance(block, EspeakConfig):
        from providers.tts_local import LocalSpeechProvider

        return LocalSpeechProvider(block)
    if isinstance(block, OpenAISpeechConfig):
        from providers.tts_openai import OpenAISpeechProvider

        return OpenAISpeechProvider(block, model.client, session)
    if isinstance(block, ElevenLabsConfig):
        from providers.tts_elevenlabs import ElevenLabsSpeechProvider

        return ElevenLabsSpeechProvider(block, model.client, session)
    raise ValueError(f"model {model.id!r}: no speak adapter for {model.provider_key!r}")


def speak_health(
    router: SpeechRouterConfig, now: float, share: HealthShare | None = None
) -> ModelRouter:
    """The health tracker and routing strategy of `router`'s enabled speak models;
    with `share` (`state.redis`), its verdicts reach the other instances."""
    assert router.speak is not None
    models = [m for m in router.speak.models if m.enabled]

    def on_event(event: str, fields: dict[str, Any]) -> None:
        log.warning(event, extra=safe_extra({"router": router.id, "endpoint": "speak", **fields}))

    return build_model_router(
        f"speak:{router.id}",
        models,
        build_strategy(router.speak.strategy, models),
        now,
        on_event,
        share,
    )


def build_speak_router(
    router: SpeechRouterConfig,
    session: aiohttp.ClientSession,
    scheduler: abc.SchedulerBase,
    now: float,
    share: HealthShare | None = None,
) -> SpeakRouter:
    """`router`'s config -> its `SpeakRouter` over providers built from config."""
    if router.speak is None:
        raise ValueError(f"speech router {router.id!r} has no speak section")
    models = [m for m in router.speak.models if m.enabled]
    providers = {m.id: build_speak_provider(m, session) for m in models}
    return SpeakRouter(
        router, providers, speak_health(router, now, share), random.Random(), scheduler
    )
