"""Prometheus metrics for one app, in a registry of its own (never the global one).

Events flow in through `Metrics`' counters and histograms (fed by `Telemetry`,
the socket sessions and the access policy); `render()` gives the exposition
text for `GET /metrics`. Gauges that describe current state (sockets, requests,
queue depth, model health) are read at scrape time from a `StateSource`, so they
cannot drift. Label values are config ids, endpoint names, outcomes and error
categories: never request data, never secrets.

Endpoints: `chat` (HTTP), `chatStream`, `speak`, `listen`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

FIRST_OUTPUT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CHUNK_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HEALTH_STATES = ("healthy", "unhealthy", "half_open", "disabled")

REQUEST = ("endpoint", "router", "model", "provider")


@dataclass(frozen=True, slots=True)
class SocketState:
    """One open websocket as the metrics see it."""

    endpoint: str
    router: str
    active_requests: int
    queued_bytes: int


@dataclass(frozen=True, slots=True)
class ModelState:
    """One routed model's health as the metrics see it."""

    endpoint: str
    router: str
    model: str
    provider: str
    state: str


class StateSource:
    """What the gauges read at scrape time; the server provides the real one."""

    def endpoints(self) -> Iterable[tuple[str, str]]:
        """Every served (websocket endpoint, router) pair, reported as 0 when idle."""
        return ()

    def sockets(self) -> Iterable[SocketState]:
        """Every open websocket."""
        return ()

    def models(self) -> Iterable[ModelState]:
        """Every routed model's health."""
        return ()

    def http_in_flight(self) -> int:
        """HTTP requests being answered."""
        return 0

    def draining(self) -> bool:
        """Whether the instance is draining."""
        return False


class _StateCollector(Collector):
    def __init__(self, source: Callable[[], StateSource]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The current-state gauges, read from the source at scrape time."""
        source = self._source()
        sockets = GaugeMetricFamily(
            "sluice_active_sockets", "Open websockets.", labels=["endpoint", "router"]
        )
        requests = GaugeMetricFamily(
            "sluice_active_requests",
            "Websocket requests in flight.",
            labels=["endpoint", "router"],
        )
        http = GaugeMetricFamily(
            "sluice_http_requests_in_flight", "HTTP chat calls being answered."
        )
        queued = GaugeMetricFamily(
            "sluice_outbound_queue_bytes",
            "Bytes waiting in websocket outbound queues for slow clients.",
            labels=["endpoint", "router"],
        )
        queued_max = GaugeMetricFamily(
            "sluice_outbound_queue_max_bytes",
            "The largest single websocket outbound queue, in bytes.",
        )
        counts: dict[tuple[str, str], list[int]] = {pair: [0, 0, 0] for pair in source.endpoints()}
        largest = 0
        for sock in source.sockets():
            entry = counts.setdefault((sock.endpoint, sock.router), [0, 0, 0])
            entry[0] += 1
            entry[1] += sock.active_requests
            entry[2] += sock.queued_bytes
            largest = max(largest, sock.queued_bytes)
        for (endpoint, router), (n_sockets, n_requests, n_bytes) in sorted(counts.items()):
            sockets.add_metric([endpoint, router], n_sockets)
            requests.add_metric([endpoint, router], n_requests)
            queued.add_metric([endpoint, router], n_bytes)
        http.add_metric([], source.http_in_flight())
        queued_max.add_metric([], largest)
        health = GaugeMetricFamily(
            "sluice_model_health",
            "1 for each model's current health state (healthy, unhealthy, half_open, "
            "disabled), 0 for the others.",
            labels=["endpoint", "router", "model", "provider", "state"],
        )
        for model in source.models():
            for state in HEALTH_STATES:
                health.add_metric(
                    [model.endpoint, model.router, model.model, model.provider, state],
                    1.0 if model.state == state else 0.0,
                )
        draining = GaugeMetricFamily("sluice_draining", "1 while the instance drains.")
        draining.add_metric([], 1.0 if source.draining() else 0.0)
        yield from (sockets, requests, http, queued, queued_max, health, draining)


class Metrics:
    """Every Sluice metric, registered in `self.registry`.

    Counters (exposed with a `_total` suffix) and histograms are public
    attributes; pipelines normally reach them through `Telemetry`, speech
    endpoints may call `labels(...).observe(...)` on them directly.
    """

    def __init__(self, state: Callable[[], StateSource] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "sluice_requests",
            "Requests that ended, by the model that answered (empty when none did) and "
            "outcome: ok, error, cancelled, rejected (refused at admission or invalid), "
            "aborted (the socket closed first).",
            [*REQUEST, "outcome"],
            registry=registry,
        )
        self.request_errors = Counter(
            "sluice_request_errors",
            "Requests that ended with an error frame or HTTP error, by error name.",
            ["endpoint", "router", "error"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "sluice_request_duration_seconds",
            "From a request's first message to its terminal frame.",
            ["endpoint", "router", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "sluice_provider_attempts",
            "Provider attempts by outcome: success, failure, abandoned (cancelled, or the "
            "request ended first).",
            [*REQUEST, "outcome"],
            registry=registry,
        )
        self.failovers = Counter(
            "sluice_failovers",
            "Failed provider attempts, each handing its request on to the next model "
            "(or to the next retry pass, or ending it), by error category and stage "
            "(before_output: silent; mid_stream: the client saw model_unavailable).",
            [*REQUEST, "category", "stage"],
            registry=registry,
        )
        self.time_to_first_chunk = Histogram(
            "sluice_time_to_first_chunk_seconds",
            "Chat: from the request's arrival to its first chunk leaving the pipeline.",
            list(REQUEST),
            buckets=FIRST_OUTPUT_BUCKETS,
            registry=registry,
        )
        self.time_to_first_audio = Histogram(
            "sluice_time_to_first_audio_seconds",
            "Speak: from the request's arrival to its first audio frame.",
            list(REQUEST),
            buckets=FIRST_OUTPUT_BUCKETS,
            registry=registry,
        )
        self.time_to_final_transcript = Histogram(
            "sluice_time_to_final_transcript_seconds",
            "Listen: from the end of a speech segment to its final transcript.",
            list(REQUEST),
            buckets=FIRST_OUTPUT_BUCKETS,
            registry=registry,
        )
        self.chunk_interval = Histogram(
            "sluice_chunk_interval_seconds",
            "Time between consecutive outputs of one request (chunks, audio).",
            list(REQUEST),
            buckets=CHUNK_BUCKETS,
            registry=registry,
        )
        self.chunk_latency = Histogram(
            "sluice_chunk_latency_seconds",
            "Time a frame spends inside Sluice: from the pipeline emitting it (as the "
            "provider's chunk arrives) to its websocket write completing.",
            ["endpoint"],
            buckets=CHUNK_BUCKETS,
            registry=registry,
        )
        self.rejections = Counter(
            "sluice_rejections",
            "Refused upgrades, HTTP calls, requests and frames, by reason (the error name: "
            "unauthorized, forbidden, origin_not_allowed, rate_limited, too_many_sockets, "
            "too_many_requests, payload_parse_error, ...).",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.socket_closes = Counter(
            "sluice_socket_closes",
            "Closed websockets by reason: client, draining, slow_consumer, frame_too_large, error.",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.frames_sent = Counter(
            "sluice_frames_sent",
            "Websocket frames written, by kind (text, binary).",
            ["endpoint", "kind"],
            registry=registry,
        )
        self.bytes_sent = Counter(
            "sluice_bytes_sent",
            "Websocket payload bytes written.",
            ["endpoint"],
            registry=registry,
        )
        if state is not None:
            registry.register(_StateCollector(state))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
