"""A speech router's listen models behind failover, retry passes and deadlines.

`ListenRouter.transcribe(segment, language, interim)` -> Observable of
`SegmentTranscript | Reset`: one VAD segment's transcripts (interims when asked,
then exactly one final) from whichever model succeeds; a `Reset` names a model
that failed after interim text. Pipelines depend on this observable, not on
providers (tests hand in `Transcriber`s of cold observables).

    segment audio ─► failover(models: transcriber ─► final_deadline from the
        segment end ─► require a final ─► tag) ─► retry_passes ─► transcripts
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops

from config.models import ListenModelConfig, ListenSection, SpeechRouterConfig
from observability.logs import safe_extra
from observability.telemetry import RequestTelemetry
from operators.aio import from_async_iterable
from operators.deadlines import require_output
from operators.failover import Reset, RouterHealth, failover, retry_passes
from operators.final_deadline import final_deadline
from operators.instrument import instrument_attempt
from operators.scheduling import defer_scheduled
from providers.stt_types import (
    SegmentAudio,
    SttCommitted,
    SttEvent,
    SttFinal,
    SttProvider,
    SttRequest,
)
from routing.router import HealthShare, ModelRouter, build_model_router
from routing.strategies import build_strategy

log = logging.getLogger("sluice.listen")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which model produced a transcript."""

    model_id: str
    provider_id: str
    model_name: str


@dataclass(frozen=True, slots=True)
class SegmentTranscript:
    """A transcript of one segment, ready for the wire."""

    segment_id: int
    text: str
    is_final: bool
    start_ms: int
    end_ms: int
    model: ModelInfo


Transcriber = Callable[[SttRequest], Observable[SttEvent]]
"""One attempt: a segment's audio in, the provider's events out (cold)."""


def provider_transcriber(provider: SttProvider) -> Transcriber:
    """A provider adapter as a `Transcriber` (each subscription is a new call)."""

    def transcribe(request: SttRequest) -> Observable[SttEvent]:
        return from_async_iterable(lambda: provider.transcribe(request))

    return transcribe


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _is_final(event: SttEvent) -> bool:
    return isinstance(event, SttFinal)


def _is_final_transcript(item: SegmentTranscript) -> bool:
    return item.is_final


def _not_final(event: SttEvent) -> bool:
    return not isinstance(event, SttFinal)


@dataclass
class _Progress:
    """Text committed by failed attempts and the audio offset it covers."""

    text: str = ""
    offset_ms: int = 0


class ListenRouter:
    """The listen models of one speech router behind failover, retry and deadlines."""

    def __init__(
        self,
        router_id: str,
        config: SpeechRouterConfig,
        transcribers: Mapping[str, Transcriber],
        infos: Mapping[str, ModelInfo],
        rates: Mapping[str, int],
        health: RouterHealth,
        rng: random.Random,
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        assert config.listen is not None
        self.id = router_id
        self.config = config
        self.section: ListenSection = config.listen
        self.health = health
        self._models: dict[str, ListenModelConfig] = {m.id: m for m in self.section.models}
        self._transcribers = dict(transcribers)
        self._infos = dict(infos)
        self._rates = dict(rates)
        self._rng = rng
        self._scheduler = scheduler

    def transcribe(
        self,
        segment: SegmentAudio,
        language: str | None,
        interim: bool,
        telemetry: RequestTelemetry | None = None,
    ) -> Observable[SegmentTranscript | Reset]:
        """One segment's transcripts (interims when asked, then its final) from any model.

        Starts while the segment is still being spoken. An attempt must deliver
        its final within the model's `client.first_chunk_timeout` (and
        `timeout`) of the segment end, with gaps under `client.idle_timeout`;
        an attempt that ends without a final fails. After a failure the next
        model gets the audio after the last committed result, and the committed
        text is kept in front of what it says. Failed passes are retried with
        the router's backoff.
        """
        progress = _Progress()

        def attempt(model_id: str) -> Observable[SegmentTranscript]:
            model = self._models[model_id]
            info = self._infos[model_id]
            client = model.client

            def start(_: abc.SchedulerBase) -> Observable[SegmentTranscript]:
                base_text, offset = progress.text, progress.offset_ms
                seen = _Progress()
                request = SttRequest(segment, offset, language, interim, self._rates[model_id])

                def tag(event: SttEvent) -> SegmentTranscript:
                    final = isinstance(event, SttFinal)
                    end = (
                        segment.end_ms
                        if segment.end_ms is not None
                        else segment.audio_start_ms + segment.received_ms()
                    )
                    return SegmentTranscript(
                        segment.segment_id,
                        _join(base_text, event.text),
                        final,
                        segment.start_ms,
                        end,
                        info,
                    )

                if segment.finished and request.start_byte >= segment.size:
                    return reactivex.of(tag(SttFinal("")))  # everything was committed already

                def track(event: SttEvent) -> None:
                    if isinstance(event, SttCommitted):
                        seen.text, seen.offset_ms = event.text, event.through_ms

                def keep_progress(_: Exception) -> None:
                    if seen.offset_ms > 0:
                        progress.text = _join(base_text, seen.text)
                        progress.offset_ms = offset + seen.offset_ms

                events = self._transcribers[model_id](request)
                return events.pipe(
                    final_deadline(
                        segment.ended,
                        min(client.first_chunk_timeout, client.timeout),
                        client.idle_timeout,
                        _is_final,
                        scheduler=self._scheduler,
                    ),
                    require_output(_is_final, what="final transcript"),
                    ops.do_action(on_next=track, on_error=keep_progress),
                    ops.take_while(_not_final, inclusive=True),
                    ops.map(tag),
                    instrument_attempt(
                        telemetry, model_id, info.provider_id, is_final=_is_final_transcript
                    ),
                )

            return defer_scheduled(start, self._scheduler, "listen attempt")

        routed: Observable[SegmentTranscript | Reset] = failover(
            self.id,
            self.health,
            attempt,
            scheduler=self._scheduler,
            is_final=_is_final_transcript,
        ).pipe(retry_passes(self.config.retry, self._rng, scheduler=self._scheduler))
        if interim:
            return routed

        def wanted(item: SegmentTranscript | Reset) -> bool:
            return isinstance(item, SegmentTranscript) and item.is_final

        return routed.pipe(ops.filter(wanted))


def listen_health(
    router: SpeechRouterConfig, now: float, share: HealthShare | None = None
) -> ModelRouter:
    """The health tracker and routing strategy of `router`'s enabled listen models;
    with `share` (`state.redis`), its verdicts reach the other instances."""
    assert router.listen is not None
    models = [m for m in router.listen.models if m.enabled]

    def on_event(event: str, fields: dict[str, Any]) -> None:
        log.error(event, extra=safe_extra({"router": router.id, "endpoint": "listen", **fields}))

    return build_model_router(
        f"listen:{router.id}",
        models,
        build_strategy(router.listen.strategy, models),
        now,
        on_event,
        share,
    )


def build_listen_router(
    router: SpeechRouterConfig,
    providers: Mapping[str, SttProvider],
    health: RouterHealth,
    scheduler: abc.SchedulerBase | None,
) -> ListenRouter:
    """`router`'s config + its providers (by model id) + health -> its `ListenRouter`."""
    return ListenRouter(
        router.id,
        router,
        {model_id: provider_transcriber(p) for model_id, p in providers.items()},
        {
            model_id: ModelInfo(model_id, p.provider_id, p.model_name)
            for model_id, p in providers.items()
        },
        {model_id: p.sample_rate for model_id, p in providers.items()},
        health,
        random.Random(),
        scheduler,
    )
