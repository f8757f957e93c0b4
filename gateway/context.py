"""The app's start-up and clean-up contexts.

`gateway_context`: the app's config in; on startup a `Gateway` (routers, speech
endpoints, telemetry, reloader) stored under `GATEWAY`; on cleanup providers,
endpoints, the request log and the HTTP session closed. `state_context` opens and
closes the Redis link of `state.redis`. `log_routerless_endpoints` warns about
endpoints no router serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from config import SluiceConfig
from config.coverage import ENDPOINT_SECTIONS, endpoints_without_routers
from gateway.build import build_chat_routers, build_speech_endpoints
from gateway.core import (
    CONFIG,
    GATEWAY,
    METRICS,
    PROVIDER_FACTORY,
    SHARED_LIMITS,
    SPAN_EXPORTER,
    STATE_LINK,
    Gateway,
    ProviderFactory,
)
from observability.telemetry import Telemetry
from observability.tracing import Tracing, build_tracing
from openai_api.embed_call import EMBEDDING
from operators.scheduling import seconds
from pipelines.endpoint import BuildContext
from providers.registry import build_chat_provider
from resume.build import build_request_log
from security.access import ACCESS
from security.hosts import HOSTS
from security.redact import Redactor, config_secrets
from serving.reload import CONFIG_SOURCE, RELOADER, Reloader
from state.health import SHARED_HEALTH, SharedHealth
from transport import loop as event_loop

log = logging.getLogger("sluice.server")


async def gateway_context(app: web.Application) -> AsyncIterator[None]:
    """Build the gateway on startup; on cleanup close sockets, providers, HTTP session."""
    config = app[CONFIG]
    factory: ProviderFactory = app.get(PROVIDER_FACTORY, build_chat_provider)  # type: ignore[assignment]
    scheduler = event_loop.LoopScheduler(asyncio.get_running_loop())
    tracing: Tracing | None = build_tracing(config.tracing, exporter=app.get(SPAN_EXPORTER))
    telemetry = Telemetry(lambda: seconds(scheduler), app.get(METRICS), tracing)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    session = aiohttp.ClientSession(connector=connector)
    link = app.get(STATE_LINK)
    shared = SharedHealth(link, lambda: seconds(scheduler)) if link else None
    if shared is not None:
        await shared.load_now()
        app[SHARED_HEALTH] = shared
    routers, providers = build_chat_routers(config, session, scheduler, factory, shared)
    context = BuildContext(session, scheduler, config.limits, telemetry, health_share=shared)
    speech = build_speech_endpoints(config, context)
    app[GATEWAY] = Gateway(
        config,
        scheduler,
        routers,
        providers,
        speech,
        telemetry=telemetry,
        redact=Redactor(config_secrets(config)),
        state=app.get(STATE_LINK),
        request_log=build_request_log(config.resume, config.state.redis),
        upstream=session,
    )
    log.info(
        "sluice ready",
        extra={
            "language_routers": sorted(routers),
            "speech_routers": sorted(speech),
            "host": config.server.host,
            "client_keys": len(config.auth.keys),
            "metrics": config.metrics.enabled,
            "tracing": config.tracing.exporter if config.tracing.enabled else None,
            "state": "redis" if config.state.redis is not None else "local",
        },
    )
    log_routerless_endpoints(config)
    # config reload (serving/reload.py): only when the serve path named the source
    source = app.get(CONFIG_SOURCE)
    if source is not None:
        app[RELOADER] = Reloader(
            app[GATEWAY],
            source,
            build_chat=lambda c: build_chat_routers(c, session, scheduler, factory, shared),
            build_speech=build_speech_endpoints,
            context=context,
            access=app[ACCESS],
            hosts=app.get(HOSTS),
            registry=app[METRICS].registry,
            after_reload=shared.forget_disabled if shared is not None else None,
            more_trackers=lambda: app[EMBEDDING].trackers() if EMBEDDING in app else [],
        )
    if shared is not None:
        shared.serve()
    try:
        yield
    finally:
        if shared is not None:
            await shared.aclose()
        closing = [p.aclose() for p in providers]
        closing += [e.aclose() for by_kind in speech.values() for e in by_kind.values()]
        if RELOADER in app:
            closing.append(app[RELOADER].aclose())
        request_log = app[GATEWAY].request_log
        if request_log is not None:
            closing.append(request_log.aclose())
        await asyncio.gather(*closing, return_exceptions=True)
        await session.close()
        if tracing is not None:
            await asyncio.get_running_loop().run_in_executor(None, tracing.shutdown)


def log_routerless_endpoints(config: SluiceConfig) -> None:
    """A config in; a start-up warning naming the endpoints no router serves (a config
    file replaces the whole embedded default, so they answer `router_not_found`)."""
    missing = endpoints_without_routers(config)
    if missing:
        log.warning(
            "no router serves some endpoints (a config file replaces the whole embedded "
            "default; copy the routers you want to keep from config/default.yaml)",
            extra={
                "endpoints": missing,
                "sections": sorted({ENDPOINT_SECTIONS[e] for e in missing}),
            },
        )


async def state_context(app: web.Application) -> AsyncIterator[None]:
    """`state.redis` set: connect this process's Redis link before the gateway is
    built (it never waits for Redis to be up) and close it after."""
    link = app.get(STATE_LINK)
    if link is not None:
        await link.start()
    try:
        yield
    finally:
        if SHARED_LIMITS in app:
            await app[SHARED_LIMITS].aclose()
        if link is not None:
            await link.aclose()
