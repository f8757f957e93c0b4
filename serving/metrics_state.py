"""A worker's share of the metrics, for scrapes that reach another worker.

A running app in; `publish_metrics_state` writes this worker's state gauges and its
sockets' batched frame counts every `METRICS_STATE_SECONDS`; `flush_socket_counts`
adds the batched counts to the metrics now (also before every scrape).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.core import GATEWAY, METRICS

METRICS_STATE_SECONDS = 1.0
"""How often a worker writes its state gauges for the other workers' scrapes."""


async def publish_metrics_state(app: web.Application) -> None:
    """One of several workers, from the moment it listens until cancelled: write this
    worker's state gauges (sockets, requests, health, draining) and its sockets'
    batched frame counts every `METRICS_STATE_SECONDS`, for whichever worker is scraped."""
    metrics = app[METRICS]
    while True:
        flush_socket_counts(app)
        metrics.publish_state()
        await asyncio.sleep(METRICS_STATE_SECONDS)


def flush_socket_counts(app: web.Application) -> None:
    """Add every open socket's batched frame and byte counts to the metrics now."""
    gateway = app.get(GATEWAY)
    if gateway is not None:
        for session in gateway.sessions:
            session.flush_counts()
