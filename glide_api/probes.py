"""Liveness, readiness and metrics.

`GET /v1/health` -> always healthy; `GET /v1/ready` -> 503 while draining, with the
shared state store's line; `GET /metrics` -> the app's Prometheus registry.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.core import GATEWAY, METRICS, STATE_LINK
from observability.metrics import CONTENT_TYPE
from serving.metrics_state import flush_socket_counts
from state.link import RedisLink
from transport.http_json import json_response


async def health(_: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return json_response({"healthy": True})


def state_body(link: RedisLink | None) -> dict[str, Any]:
    """The shared state store's line in `/v1/ready`'s body (nothing without one)."""
    if link is None:
        return {}
    # no URL: readiness is often reachable from outside; the logs name it
    return {"state": {"store": "redis", "up": link.up}}


async def ready(request: web.Request) -> web.Response:
    """Readiness: 503 while draining so the load balancer stops sending."""
    if request.app[GATEWAY].draining:
        return json_response(
            {"ready": False, "reason": "draining", **state_body(request.app.get(STATE_LINK))},
            status=503,
        )
    # Redis down does not make an instance unready: it serves on local state
    return json_response({"ready": True, **state_body(request.app.get(STATE_LINK))})


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`: the app's Prometheus registry in the text exposition format."""
    flush_socket_counts(request.app)
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
