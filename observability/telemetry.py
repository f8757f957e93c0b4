"""What happens to each request, told to metrics, traces and logs at once.

A pipeline asks `Telemetry.request(endpoint, router, request_id)` for a
`RequestTelemetry` when a request starts and reports its outputs, its provider
attempts (`attempt(model, provider)` -> `AttemptTelemetry`) and its end
(`finish(outcome)`). Each report updates the Prometheus metrics, the request's
span (and a child span per attempt) when tracing is on, and writes a JSON log
line carrying request_id, router, model and provider. The operators in
`operators.instrument` make these calls from Rx pipelines.

Time comes from the injected `clock` (the app's scheduler), never a wall clock
read here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from observability.metrics import Metrics
from observability.tracing import Span, Tracing
from providers.types import ProviderError

log = logging.getLogger("sluice.requests")

OK: Final = "ok"
ERROR: Final = "error"
CANCELLED: Final = "cancelled"
REJECTED: Final = "rejected"
ABORTED: Final = "aborted"

REJECTED_ERRORS: Final = frozenset(
    {
        "payload_parse_error",
        "invalid_request",
        "unsupported_message_type",
        "message_history_too_long",
        "metadata_too_large",
        "text_too_long",
        "audio_too_long",
    }
)
"""Error names that mean the request was refused before any provider work."""


def error_category(error: BaseException) -> str:
    """The failover cause of an attempt's error: a `ProviderError` category or `internal`."""
    if isinstance(error, ProviderError):
        return error.category.value
    return "internal"


class AttemptTelemetry:
    """One provider attempt of one request; exactly one of succeeded / failed / abandoned.

    Later reports after the first verdict are ignored.
    """

    __slots__ = ("_outputs", "_request", "_settled", "_span", "model", "provider")

    def __init__(self, request: RequestTelemetry, model: str, provider: str) -> None:
        self._request = request
        self.model = model
        self.provider = provider
        self._outputs = 0
        self._settled = False
        tracing = request.telemetry.tracing
        self._span: Span | None = None
        if tracing is not None:
            self._span = tracing.start(
                f"attempt {model}", request.span, model=model, provider=provider
            )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("attempt started", extra=self._fields())

    def _fields(self) -> dict[str, object]:
        request = self._request
        return {
            "request_id": request.request_id,
            "router": request.router,
            "endpoint": request.endpoint,
            "model": self.model,
            "provider": self.provider,
        }

    def output(self) -> None:
        """The attempt produced an item (the request's answer now comes from this model)."""
        if self._outputs == 0:
            self._request.answered_by(self.model, self.provider)
        self._outputs += 1

    def _settle(self, outcome: str) -> bool:
        if self._settled:
            return False
        self._settled = True
        metrics = self._request.telemetry.metrics
        if metrics is not None:
            metrics.attempts.labels(*self._request.labels(self.model, self.provider), outcome).inc()
        return True

    def succeeded(self) -> None:
        """The attempt delivered the whole answer."""
        if self._settle("success") and self._span is not None:
            self._span.set(outcome="success", outputs=self._outputs)
            self._span.end()

    def failed(self, error: BaseException) -> None:
        """The attempt failed with `error`; the request fails over (or ends)."""
        if not self._settle("failure"):
            return
        category = error_category(error)
        stage = "mid_stream" if self._outputs else "before_output"
        request = self._request
        metrics = request.telemetry.metrics
        if metrics is not None:
            labels = request.labels(self.model, self.provider)
            metrics.failovers.labels(*labels, category, stage).inc()
        request.failovers += 1
        log.warning(
            "attempt failed",
            extra={**self._fields(), "category": category, "stage": stage, "error": str(error)},
        )
        if self._span is not None:
            self._span.set(outcome="failure", category=category, stage=stage)
            self._span.end(error=str(error))

    def abandoned(self) -> None:
        """The attempt was stopped without a verdict (cancel, disconnect, request ended)."""
        if self._settle("abandoned") and self._span is not None:
            self._span.set(outcome="abandoned", outputs=self._outputs)
            self._span.end()


class RequestTelemetry:
    """One request's telemetry, from its first message to `finish`."""

    __slots__ = (
        "_finished",
        "_interval",
        "_last_output",
        "endpoint",
        "failovers",
        "key_id",
        "model",
        "provider",
        "request_id",
        "router",
        "span",
        "started",
        "telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        endpoint: str,
        router: str,
        request_id: str,
        key_id: str | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.endpoint = endpoint
        self.router = router
        self.request_id = request_id
        self.key_id = key_id
        self.model = ""
        self.provider = ""
        self.failovers = 0
        self.started = telemetry.clock()
        self._last_output: float | None = None
        self._interval: tuple[str, Any] | None = None
        self._finished = False
        self.span: Span | None = None
        if telemetry.tracing is not None:
            self.span = telemetry.tracing.start(
                f"{endpoint} {router}", endpoint=endpoint, router=router, request_id=request_id
            )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request started",
                extra={
                    "request_id": request_id,
                    "router": router,
                    "endpoint": endpoint,
                    "key_id": key_id,
                },
            )

    def labels(self, model: str | None = None, provider: str | None = None) -> tuple[str, ...]:
        """(endpoint, router, model, provider) metric labels."""
        return (
            self.endpoint,
            self.router,
            self.model if model is None else model,
            self.provider if provider is None else provider,
        )

    def attempt(self, model: str, provider: str) -> AttemptTelemetry:
        """A provider attempt starts on `model` (served by `provider`)."""
        return AttemptTelemetry(self, model, provider)

    def answered_by(self, model: str, provider: str) -> None:
        """The request's output now comes from `model` (after a failover, another one)."""
        self.model = model
        self.provider = provider

    def output(self) -> None:
        """One output (chunk, audio) left the pipeline: first-output and interval times."""
        now = self.telemetry.clock()
        metrics = self.telemetry.metrics
        last = self._last_output
        self._last_output = now
        if metrics is None:
            return
        if last is None:
            histogram = {
                "chat": metrics.time_to_first_chunk,
                "chatStream": metrics.time_to_first_chunk,
                "speak": metrics.time_to_first_audio,
            }.get(self.endpoint)
            if histogram is not None:
                histogram.labels(*self.labels()).observe(max(0.0, now - self.started))
                if self.span is not None:
                    self.span.event("first_output", model=self.model)
        else:
            # the labelled child is looked up once per model, not once per chunk
            interval = self._interval
            if interval is None or interval[0] != self.model:
                interval = (self.model, metrics.chunk_interval.labels(*self.labels()))
                self._interval = interval
            interval[1].observe(max(0.0, now - last))

    def final_transcript(self, seconds: float) -> None:
        """Listen: a final transcript came `seconds` after its speech segment ended."""
        metrics = self.telemetry.metrics
        if metrics is not None:
            metrics.time_to_final_transcript.labels(*self.labels()).observe(max(0.0, seconds))

    def finish(self, outcome: str, *, error: str | None = None) -> None:
        """The request ended (`ok`, `error`, `cancelled`, `rejected`, `aborted`); once."""
        if self._finished:
            return
        self._finished = True
        duration = max(0.0, self.telemetry.clock() - self.started)
        metrics = self.telemetry.metrics
        if metrics is not None:
            metrics.requests.labels(*self.labels(), outcome).inc()
            metrics.request_duration.labels(self.endpoint, self.router, outcome).observe(duration)
            if error is not None:
                metrics.request_errors.labels(self.endpoint, self.router, error).inc()
                if outcome == REJECTED:
                    metrics.rejections.labels(self.endpoint, error).inc()
        log.info(
            "request finished",
            extra={
                "request_id": self.request_id,
                "router": self.router,
                "endpoint": self.endpoint,
                "model": self.model or None,
                "provider": self.provider or None,
                "outcome": outcome,
                "error": error,
                "failovers": self.failovers,
                "duration_ms": round(duration * 1000, 3),
                "key_id": self.key_id,
            },
        )
        if self.span is not None:
            self.span.set(outcome=outcome, model=self.model, provider=self.provider)
            self.span.end(error=error if outcome == ERROR else None)


class Telemetry:
    """An app's metrics, traces and request logs; `clock()` is scheduler seconds.

    `Telemetry(clock)` with no metrics and no tracing still writes the request
    logs (what tests and embedders get by default).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.tracing = tracing

    def request(
        self, endpoint: str, router: str, request_id: str, *, key_id: str | None = None
    ) -> RequestTelemetry:
        """A request starts now."""
        return RequestTelemetry(self, endpoint, router, request_id, key_id)

    def rejected(self, endpoint: str, router: str, reason: str, *, request: bool = True) -> None:
        """Something was refused: a request at admission (`request=True`) or a frame."""
        metrics = self.metrics
        if metrics is None:
            return
        metrics.rejections.labels(endpoint, reason).inc()
        if request:
            metrics.requests.labels(endpoint, router, "", "", REJECTED).inc()
            metrics.request_errors.labels(endpoint, router, reason).inc()
