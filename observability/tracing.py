"""Optional OpenTelemetry traces: one span per request, a child span per attempt.

`build_tracing(config)` -> a `Tracing` (or None when `tracing.enabled` is false).
OpenTelemetry is an optional dependency (the `otel` extra), imported only here
and only when tracing is on; config loading already refused `enabled: true`
without it. The tracer provider belongs to the app (it is never installed as
OpenTelemetry's global) and is shut down, flushing its spans, on app cleanup.
"""

from __future__ import annotations

import importlib
from typing import Any

from config.models import TracingConfig


class Span:
    """A started span; `end()` exactly once. Attribute values are str, int or float."""

    def __init__(self, span: Any, trace_api: Any) -> None:
        self._span = span
        self._trace = trace_api

    def set(self, **attributes: str | int | float | bool) -> None:
        """Add attributes to the span."""
        for key, value in attributes.items():
            self._span.set_attribute(f"sluice.{key}", value)

    def event(self, name: str, **attributes: str | int | float | bool) -> None:
        """Record a point in time on the span (e.g. the first chunk)."""
        self._span.add_event(name, {f"sluice.{k}": v for k, v in attributes.items()})

    def end(self, *, error: str | None = None) -> None:
        """End the span; `error` marks it failed with that description."""
        status = self._trace.Status(
            self._trace.StatusCode.ERROR if error else self._trace.StatusCode.OK, error
        )
        self._span.set_status(status)
        self._span.end()

    def context(self) -> Any:
        """An OpenTelemetry context with this span as parent (for child spans)."""
        return self._trace.set_span_in_context(self._span)


class Tracing:
    """An app's tracer provider and tracer; spans in, exported spans out."""

    def __init__(self, provider: Any, trace_api: Any) -> None:
        self.provider = provider
        self._trace = trace_api
        self._tracer = provider.get_tracer("sluice")

    def start(
        self, name: str, parent: Span | None = None, **attributes: str | int | float | bool
    ) -> Span:
        """Start a span (a child of `parent` when given)."""
        context = parent.context() if parent is not None else None
        span = self._tracer.start_span(
            name,
            context=context,
            attributes={f"sluice.{k}": v for k, v in attributes.items()},
        )
        return Span(span, self._trace)

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        self.provider.shutdown()


def build_tracing(config: TracingConfig, *, exporter: Any = None) -> Tracing | None:
    """A `Tracing` for `config` (None when disabled); `exporter` replaces the configured
    one (tests pass an in-memory exporter)."""
    if not config.enabled and exporter is None:
        return None
    trace_api = importlib.import_module("opentelemetry.trace")
    sdk = importlib.import_module("opentelemetry.sdk.trace")
    export = importlib.import_module("opentelemetry.sdk.trace.export")
    sampling = importlib.import_module("opentelemetry.sdk.trace.sampling")
    resources = importlib.import_module("opentelemetry.sdk.resources")
    resource = resources.Resource.create({"service.name": config.service_name})
    sampler = sampling.ParentBased(sampling.TraceIdRatioBased(config.sample_ratio))
    # shut down by the app on cleanup; an atexit hook would keep every app alive
    provider = sdk.TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
    if exporter is not None:
        provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    elif config.exporter == "console":
        provider.add_span_processor(export.SimpleSpanProcessor(export.ConsoleSpanExporter()))
    else:
        otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        kwargs = {"endpoint": config.endpoint} if config.endpoint else {}
        provider.add_span_processor(export.BatchSpanProcessor(otlp.OTLPSpanExporter(**kwargs)))
    return Tracing(provider, trace_api)
