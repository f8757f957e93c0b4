"""Metrics of the connection layer: half-sent requests, idle connections, dead websockets.

Built once per app on its registry (`NetworkMetrics(metrics.registry)`); the
connection guard (`transport.http_guard`) and the websocket reader feed it.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge


class NetworkMetrics:
    """Counters and the pending-connections gauge, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # moved by inc/dec (not read at scrape time) so that worker processes sum up
        self.pending = Gauge(
            "sluice_http_pending_connections",
            "Connections that have not yet delivered a complete request head.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.header_timeouts = Counter(
            "sluice_http_header_timeouts",
            "Connections closed because their request head did not arrive within "
            "server.header_timeout.",
            registry=registry,
        )
        self.idle_closes = Counter(
            "sluice_http_idle_closes",
            "Kept-alive connections closed after server.keepalive_timeout without a request.",
            registry=registry,
        )
        self.refused = Counter(
            "sluice_http_connections_refused",
            "Connections refused at once (503) by reason: pending_limit "
            "(server.max_pending_connections), peer_pending_limit (server.max_pending_per_peer).",
            ["reason"],
            registry=registry,
        )
        self.heartbeat_timeouts = Counter(
            "sluice_socket_heartbeat_timeouts",
            "Websockets dropped because the peer did not answer the heartbeat ping.",
            ["endpoint"],
            registry=registry,
        )


NETWORK = web.AppKey("sluice_network_metrics", NetworkMetrics)
