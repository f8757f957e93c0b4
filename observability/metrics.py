"""Prometheus metrics for one app, in a registry of its own (never the global one).

Events flow in through `Metrics`' counters and histograms (fed by `Telemetry`,
the socket sessions and the access policy); `render()` gives the exposition
text for `GET /metrics`. Gauges that describe current state (sockets, requests,
queue depth, model health) are read at scrape time from a `StateSource`, so they
cannot drift. Label values are config ids, endpoint names, outcomes and error
categories: never request data, never secrets.

Endpoints: `chat` (HTTP), `chatStream`, `speak`, `listen`.

Several worker processes (`sluice serve --workers N`) report as one server through
prometheus-client's multiprocess mode: see `Metrics`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
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


@dataclass(frozen=True, slots=True)
class StateValues:
    """One reading of a `StateSource`, as the gauges report it."""

    by_endpoint: dict[tuple[str, str], tuple[int, int, int]]
    """(endpoint, router) -> (sockets, active requests, queued bytes)."""
    largest_queue: int
    http_in_flight: int
    health: list[tuple[tuple[str, str, str, str, str], float]]
    """((endpoint, router, model, provider, state), 1.0 or 0.0) per model and state."""
    draining: bool

    @property
    def sockets(self) -> int:
        """Open websockets, all endpoints together."""
        return sum(n for n, _, _ in self.by_endpoint.values())


def read_state(source: StateSource) -> StateValues:
    """A `StateSource` in, the gauges' values now out."""
    counts: dict[tuple[str, str], list[int]] = {pair: [0, 0, 0] for pair in source.endpoints()}
    largest = 0
    for sock in source.sockets():
        entry = counts.setdefault((sock.endpoint, sock.router), [0, 0, 0])
        entry[0] += 1
        entry[1] += sock.active_requests
        entry[2] += sock.queued_bytes
        largest = max(largest, sock.queued_bytes)
    health = [
        (
            (model.endpoint, model.router, model.model, model.provider, state),
            1.0 if model.state == state else 0.0,
        )
        for model in source.models()
        for state in HEALTH_STATES
    ]
    return StateValues(
        {pair: (n, r, b) for pair, (n, r, b) in sorted(counts.items())},
        largest,
        source.http_in_flight(),
        health,
        source.draining(),
    )


_SOCKETS = ("sluice_active_sockets", "Open websockets.")
_REQUESTS = ("sluice_active_requests", "Websocket requests in flight.")
_HTTP = ("sluice_http_requests_in_flight", "HTTP chat calls being answered.")
_QUEUED = (
    "sluice_outbound_queue_bytes",
    "Bytes waiting in websocket outbound queues for slow clients.",
)
_QUEUED_MAX = (
    "sluice_outbound_queue_max_bytes",
    "The largest single websocket outbound queue, in bytes.",
)
_HEALTH = (
    "sluice_model_health",
    "1 for each model's current health state (healthy, unhealthy, half_open, "
    "disabled), 0 for the others (with several workers: 1 when any worker sees it).",
)
_DRAINING = ("sluice_draining", "1 while the instance drains.")
_WORKER_SOCKETS = (
    "sluice_worker_active_sockets",
    "Open websockets per worker process (labels worker: its slot, pid): how evenly the "
    "workers share the port. A worker's series appears once it listens.",
)
_PAIR = ["endpoint", "router"]
_MODEL = ["endpoint", "router", "model", "provider", "state"]


class _StateCollector(Collector):
    def __init__(self, source: Callable[[], StateSource]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The current-state gauges, read from the source at scrape time."""
        values = read_state(self._source())
        sockets = GaugeMetricFamily(*_SOCKETS, labels=_PAIR)
        requests = GaugeMetricFamily(*_REQUESTS, labels=_PAIR)
        queued = GaugeMetricFamily(*_QUEUED, labels=_PAIR)
        for (endpoint, router), (n_sockets, n_requests, n_bytes) in values.by_endpoint.items():
            sockets.add_metric([endpoint, router], n_sockets)
            requests.add_metric([endpoint, router], n_requests)
            queued.add_metric([endpoint, router], n_bytes)
        http = GaugeMetricFamily(*_HTTP)
        http.add_metric([], values.http_in_flight)
        queued_max = GaugeMetricFamily(*_QUEUED_MAX)
        queued_max.add_metric([], values.largest_queue)
        health = GaugeMetricFamily(*_HEALTH, labels=_MODEL)
        for labels, value in values.health:
            health.add_metric(list(labels), value)
        draining = GaugeMetricFamily(*_DRAINING)
        draining.add_metric([], 1.0 if values.draining else 0.0)
        worker = GaugeMetricFamily(*_WORKER_SOCKETS, labels=["worker", "pid"])
        worker.add_metric(["0", str(os.getpid())], values.sockets)
        yield from (sockets, requests, http, queued, queued_max, health, draining, worker)


class _SharedStateGauges:
    """The same gauges for prometheus-client's multiprocess mode: each worker writes its
    own values (`publish`), and the scrape sums (`livesum`) or takes the largest
    (`livemax`) over live workers; a dead worker's values leave with it."""

    def __init__(self, registry: CollectorRegistry, worker: int) -> None:
        def gauge(spec: tuple[str, str], labels: list[str], mode: Any) -> Gauge:
            return Gauge(*spec, labels, registry=registry, multiprocess_mode=mode)

        self.sockets = gauge(_SOCKETS, _PAIR, "livesum")
        self.requests = gauge(_REQUESTS, _PAIR, "livesum")
        self.queued = gauge(_QUEUED, _PAIR, "livesum")
        self.http = gauge(_HTTP, [], "livesum")
        self.queued_max = gauge(_QUEUED_MAX, [], "livemax")
        self.health = gauge(_HEALTH, _MODEL, "livemax")
        self.draining = gauge(_DRAINING, [], "livemax")
        # labelled: a series exists from its first `labels()`, the first publish, which
        # comes once the worker listens
        self.worker = gauge(_WORKER_SOCKETS, ["worker"], "liveall")
        self._slot = str(worker)
        self._pairs: set[tuple[str, str]] = set()
        self._models: set[tuple[str, str, str, str, str]] = set()

    def publish(self, values: StateValues) -> None:
        """Write this worker's current values (label sets gone since last time read 0)."""
        for pair in self._pairs - values.by_endpoint.keys():
            for gauge in (self.sockets, self.requests, self.queued):
                gauge.labels(*pair).set(0)
        for pair, (n_sockets, n_requests, n_bytes) in values.by_endpoint.items():
            self.sockets.labels(*pair).set(n_sockets)
            self.requests.labels(*pair).set(n_requests)
            self.queued.labels(*pair).set(n_bytes)
        self._pairs = set(values.by_endpoint)
        seen = {labels for labels, _ in values.health}
        for labels in self._models - seen:
            self.health.labels(*labels).set(0)
        for labels, value in values.health:
            self.health.labels(*labels).set(value)
        self._models = seen
        self.http.set(values.http_in_flight)
        self.queued_max.set(values.largest_queue)
        self.draining.set(1.0 if values.draining else 0.0)
        self.worker.labels(self._slot).set(values.sockets)


class Metrics:
    """Every Sluice metric, registered in `self.registry`.

    Counters (exposed with a `_total` suffix) and histograms are public
    attributes; pipelines normally reach them through `Telemetry`, speech
    endpoints may call `labels(...).observe(...)` on them directly.

    With `multiprocess_dir` (one of several worker processes; prometheus-client
    must have been imported with `PROMETHEUS_MULTIPROC_DIR` set to it), every
    value is written to that directory and `render()` reports the sum over all
    workers; the state gauges are written by `publish_state()` (the server calls
    it every second once the worker listens, and before each scrape). `worker`
    is this worker's slot (a label of `sluice_worker_active_sockets`).
    """

    def __init__(
        self,
        state: Callable[[], StateSource] | None = None,
        *,
        multiprocess_dir: str | None = None,
        worker: int = 0,
    ) -> None:
        if multiprocess_dir is not None and not getattr(
            prometheus_values.ValueClass, "_multiprocess", False
        ):
            raise RuntimeError(
                "multiprocess metrics need PROMETHEUS_MULTIPROC_DIR set before "
                "prometheus_client is imported"
            )
        self.multiprocess_dir = multiprocess_dir
        self._state = state
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
        self._shared: _SharedStateGauges | None = None
        if multiprocess_dir is not None:
            self._shared = _SharedStateGauges(registry, worker)
        elif state is not None:
            registry.register(_StateCollector(state))

    def publish_state(self) -> None:
        """Multiprocess mode: write this worker's state gauges now (else nothing to do)."""
        if self._shared is not None and self._state is not None:
            self._shared.publish(read_state(self._state()))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker, in
        multiprocess mode)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.publish_state()
        merged = CollectorRegistry()
        merged.register(_EveryWorker(self.multiprocess_dir, self.registry))
        return generate_latest(merged)


class _EveryWorker(Collector):
    """Multiprocess mode: every worker's samples (prometheus-client sums them), and the
    HELP / TYPE of metrics no worker has recorded yet, so /metrics lists the same
    names with one worker or many."""

    def __init__(self, path: str, declared: CollectorRegistry) -> None:
        self._path = path
        self._declared = declared

    def collect(self) -> Iterable[Metric]:
        """Merged families, then empty families for the declared names not among them."""
        seen: set[str] = set()
        for family in self._merged():
            seen.add(family.name)
            yield family
        for family in self._declared.collect():
            if family.name not in seen:
                yield Metric(family.name, family.documentation, family.type)

    def _merged(self) -> list[Metric]:
        """Every worker's files merged. The supervisor removes a dead worker's live
        gauge files (`mark_process_dead`); one gone between the directory listing and
        its read is simply read again without it."""
        merged = MultiProcessCollector(None, path=self._path)  # type: ignore[no-untyped-call]
        for attempt in range(5):
            try:
                return list(merged.collect())  # type: ignore[no-untyped-call]
            except FileNotFoundError:
                if attempt == 4:
                    raise
        return []
