"""The aiohttp application: a config in, every route and middleware wired out.

`build_app(config)` -> an app serving every configured router: the access policy
first (`security.access`: client keys, Origins, router allowlists; refused before
any upgrade), the Glide handlers (`glide_api`), the OpenAI-compatible surface
(`openai_api`), Realtime, the API documents and the playground.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apidocs import ASYNCAPI_PATH, OPENAPI_PATH, build_asyncapi, build_openapi, document_handler
from config import SluiceConfig
from gateway.context import gateway_context, state_context
from gateway.core import (
    CONFIG,
    GATEWAY,
    METRICS,
    PROVIDER_FACTORY,
    SHARED_LIMITS,
    SPAN_EXPORTER,
    STATE_LINK,
    ProviderFactory,
)
from gateway.gauges import GatewayState
from glide_api.chat import chat
from glide_api.errors import json_errors
from glide_api.listings import list_agent_routers, list_language_routers, list_speech_routers
from glide_api.playground import add_playground_routes
from glide_api.probes import health, metrics, ready
from glide_api.sockets import chat_stream, converse_socket, speech_socket
from observability.metrics import Metrics
from observability.network import NETWORK, NetworkMetrics
from openai_api import add_openai_routes
from openai_api.embed_routes import add_embedding_routes
from realtime.endpoint import add_realtime_route
from security.access import ACCESS, Access, access_middleware
from security.hosts import HOSTS, HostPolicy, host_middleware
from security.limits import LimitPolicy, LimitStore, LocalLimits
from serving.drain import close_sockets
from serving.worker import WorkerSpec
from state.limits import RedisLimits
from state.link import RedisLink
from state.metrics import state_store_gauge
from transport.http_guard import HTTP_GUARD, ConnectionGuard, guard_middleware


def add_network_guards(app: web.Application, config: SluiceConfig) -> None:
    """The app's DNS-rebinding Host policy and connection guard, with their metrics.

    The guard's middleware is in `build_app`; its connection timers and caps start
    when the serve path calls `guard_connections(runner)`.
    """
    network = app[NETWORK] = NetworkMetrics(app[METRICS].registry)
    app[HOSTS] = HostPolicy.from_config(
        config, lambda endpoint, reason: app[METRICS].rejections.labels(endpoint, reason).inc()
    )
    app[HTTP_GUARD] = ConnectionGuard(config.server, network, max_sockets=config.limits.max_sockets)


def build_app(
    config: SluiceConfig,
    provider_factory: ProviderFactory | None = None,
    *,
    span_exporter: Any = None,
    worker: WorkerSpec | None = None,
) -> web.Application:
    """An aiohttp app serving `config`; `provider_factory` swaps adapters (tests),
    `span_exporter` receives the trace spans (tests; implies tracing on).

    One of several workers passes its `worker` spec: limits are then counted in
    the store the workers share and metrics written to their common directory;
    alone, both stay in this process."""
    app = web.Application(
        middlewares=[guard_middleware, host_middleware, json_errors, access_middleware],
        client_max_size=config.limits.text_frame_bytes,
    )
    app[CONFIG] = config
    if provider_factory is not None:
        app[PROVIDER_FACTORY] = provider_factory
    if span_exporter is not None:
        app[SPAN_EXPORTER] = span_exporter
    app[METRICS] = Metrics(
        lambda: GatewayState(app),
        multiprocess_dir=worker.metrics_dir if worker else None,
        worker=worker.slot if worker else 0,
    )
    store: LimitStore | None = worker.limits if worker else None
    redis = config.state.redis
    state_up = state_store_gauge(app[METRICS].registry, "redis" if redis else None)
    if redis is not None:
        link = app[STATE_LINK] = RedisLink(redis, on_change=state_up)
        local = store or LocalLimits(LimitPolicy.build(config.auth, config.limits))
        store = app[SHARED_LIMITS] = RedisLimits(link, local)
        app.cleanup_ctx.append(state_context)
    app[ACCESS] = Access(
        config.auth,
        config.limits,
        metrics_need_key=config.metrics.require_key,
        on_reject=lambda endpoint, reason: app[METRICS].rejections.labels(endpoint, reason).inc(),
        store=store,
    )
    add_network_guards(app, config)
    app.cleanup_ctx.append(gateway_context)
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/v1/health/", health)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/ready", ready)
    if config.metrics.enabled:
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/language/", list_language_routers)
    app.router.add_get("/v1/language", list_language_routers)
    app.router.add_post("/v1/language/{router}/chat", chat)
    app.router.add_get("/v1/language/{router}/chatStream", chat_stream)
    app.router.add_get("/v1/speech/", list_speech_routers)
    app.router.add_get("/v1/speech", list_speech_routers)
    app.router.add_get("/v1/speech/{router}/{endpoint:speak|listen}", speech_socket)
    app.router.add_get("/v1/agent/", list_agent_routers)
    app.router.add_get("/v1/agent", list_agent_routers)
    app.router.add_get("/v1/agent/{router}/converse", converse_socket)
    add_openai_routes(app, GATEWAY)
    add_embedding_routes(app, GATEWAY)
    add_realtime_route(app, GATEWAY)
    openapi, asyncapi = build_openapi(), build_asyncapi()
    app.router.add_get(OPENAPI_PATH, document_handler(openapi))
    app.router.add_get(ASYNCAPI_PATH, document_handler(asyncapi))
    add_playground_routes(app)
    return app
