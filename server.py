"""Sluice's HTTP and websocket server, and the `sluice` command line.

`build_app(config)` -> an aiohttp Application serving every configured router;
`main()` parses `sluice serve|check-config` and runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError
from reactivex import abc
from reactivex.scheduler.eventloop import AsyncIOScheduler

from config import ConfigError, SluiceConfig, check_config, load_config
from config.models import SpeechRouterConfig
from observability.logs import configure_logging
from operators.aio import to_future
from operators.failover import AllModelsUnavailable
from pipelines.chat_router import ChatRouter
from pipelines.chat_stream import CHAT, chat_stream_pipeline
from pipelines.common import Admission, describe_validation_error
from pipelines.endpoint import BuildContext, Pipeline, SocketEndpoint
from protocol.chat import ChatRequest
from protocol.frames import ErrorName
from providers.registry import build_chat_provider
from providers.types import ChatProvider, ErrorCategory, ProviderError
from routing.router import ModelRouter
from routing.strategies import build_strategy
from transport.session import SocketSession

log = logging.getLogger("sluice.server")


@dataclass
class Gateway:
    """Everything one running server holds; built in `gateway_context`."""

    config: SluiceConfig
    scheduler: abc.SchedulerBase
    chat_routers: dict[str, ChatRouter]
    providers: list[ChatProvider]
    speech: dict[str, dict[str, SocketEndpoint]] = field(default_factory=dict)
    sessions: set[SocketSession] = field(default_factory=set)
    draining: bool = False
    http_in_flight: int = 0
    work_ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def busy(self) -> bool:
        """Whether any socket is open or any HTTP request is in flight."""
        return bool(self.sessions) or self.http_in_flight > 0

    def clock(self) -> float:
        """Unix seconds from the app's scheduler."""
        return self.scheduler.to_seconds(self.scheduler.now)


CONFIG = web.AppKey("config", SluiceConfig)
GATEWAY = web.AppKey("gateway", Gateway)
ProviderFactory = Callable[[Any, aiohttp.ClientSession], ChatProvider]
PROVIDER_FACTORY = web.AppKey("provider_factory", object)


def error_response(status: int, name: str, message: str) -> web.Response:
    """Glide's HTTP error body `{name, message}`."""
    return web.json_response({"name": name, "message": message}, status=status)


def _clock_seconds(scheduler: abc.SchedulerBase) -> float:
    return scheduler.to_seconds(scheduler.now)


def build_chat_routers(
    config: SluiceConfig,
    session: aiohttp.ClientSession,
    scheduler: abc.SchedulerBase,
    factory: ProviderFactory,
) -> tuple[dict[str, ChatRouter], list[ChatProvider]]:
    """Config + HTTP session -> chat routers by id, and every provider built."""
    routers: dict[str, ChatRouter] = {}
    providers: list[ChatProvider] = []
    now = _clock_seconds(scheduler)
    for router_config in config.language_routers:
        models = router_config.enabled_models
        built = {m.id: factory(m, session) for m in models}
        providers.extend(built.values())
        health = ModelRouter(
            router_config.id,
            models,
            build_strategy(router_config.strategy, models),
            now=now,
            on_event=_health_event(router_config.id),
        )
        routers[router_config.id] = ChatRouter(
            router_config, built, health, random.Random(), scheduler
        )
    return routers, providers


def _health_event(router_id: str) -> Callable[[str, dict[str, Any]], None]:
    def on_event(event: str, fields: dict[str, Any]) -> None:
        log.error(event, extra={"router": router_id, **fields})

    return on_event


SpeechEndpointBuilder = Callable[[SpeechRouterConfig, BuildContext], SocketEndpoint]
SPEECH_ENDPOINTS = ("speak", "listen")
"""Each kind K is served by `pipelines.K.build_K_endpoint` (imported on first use)."""


def build_speech_endpoints(
    config: SluiceConfig, context: BuildContext
) -> dict[str, dict[str, SocketEndpoint]]:
    """Speech routers -> {router id: {"speak" | "listen": endpoint}}.

    Each endpoint's module is imported only when a router uses it, so a config
    without speech never loads the speech engines.
    """
    endpoints: dict[str, dict[str, SocketEndpoint]] = {}
    for router in config.speech_routers:
        built: dict[str, SocketEndpoint] = {}
        for kind in SPEECH_ENDPOINTS:
            if getattr(router, kind) is not None:
                module = importlib.import_module(f"pipelines.{kind}")
                builder: SpeechEndpointBuilder = getattr(module, f"build_{kind}_endpoint")
                built[kind] = builder(router, context)
        endpoints[router.id] = built
    return endpoints


async def gateway_context(app: web.Application) -> AsyncIterator[None]:
    """Build the gateway on startup; on cleanup close sockets, providers, HTTP session."""
    config = app[CONFIG]
    factory: ProviderFactory = app.get(PROVIDER_FACTORY, build_chat_provider)  # type: ignore[assignment]
    scheduler = AsyncIOScheduler(asyncio.get_running_loop())
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    session = aiohttp.ClientSession(connector=connector)
    routers, providers = build_chat_routers(config, session, scheduler, factory)
    speech = build_speech_endpoints(config, BuildContext(session, scheduler, config.limits))
    app[GATEWAY] = Gateway(config, scheduler, routers, providers, speech)
    log.info(
        "sluice ready",
        extra={
            "language_routers": sorted(routers),
            "speech_routers": sorted(speech),
            "host": config.server.host,
        },
    )
    try:
        yield
    finally:
        closing = [p.aclose() for p in providers]
        closing += [e.aclose() for by_kind in speech.values() for e in by_kind.values()]
        await asyncio.gather(*closing, return_exceptions=True)
        await session.close()


async def close_sockets(app: web.Application) -> None:
    """On shutdown: requests still in flight end with `shutting_down`; sockets get 1001."""
    gateway = app[GATEWAY]
    gateway.draining = True
    sessions = list(gateway.sessions)
    for session in sessions:
        session.end_now(gateway.clock)
    if sessions:
        await asyncio.wait([asyncio.ensure_future(s.closed.wait()) for s in sessions], timeout=5)


async def drain(app: web.Application, grace: float) -> None:
    """GEP 8 rollout drain: stop taking work, let in-flight work finish, then end the rest.

    Readiness turns 503 and new upgrades are refused at once; idle sockets get
    1001 now, busy ones when their last request ends; at `grace` seconds every
    request still running ends with `shutting_down` and its socket gets 1001.
    """
    gateway = app[GATEWAY]
    loop = asyncio.get_running_loop()
    gateway.draining = True
    started = loop.time()
    log.info(
        "draining",
        extra={"sockets": len(gateway.sessions), "http_in_flight": gateway.http_in_flight},
    )
    for session in list(gateway.sessions):
        session.drain()
    deadline = started + grace
    while gateway.busy and (remaining := deadline - loop.time()) > 0:
        gateway.work_ended.clear()
        try:
            await asyncio.wait_for(gateway.work_ended.wait(), remaining)
        except TimeoutError:
            break
    left = len(gateway.sessions)
    await close_sockets(app)
    log.info(
        "drained",
        extra={"seconds": round(loop.time() - started, 3), "sockets_cut_at_deadline": left},
    )


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown routes and wrong methods answer in Glide's `{name, message}` shape."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return error_response(
            404, ErrorName.ROUTE_NOT_FOUND, "requested route is not found or method is not allowed"
        )


async def health(_: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return web.json_response({"healthy": True})


async def ready(request: web.Request) -> web.Response:
    """Readiness: 503 while draining so the load balancer stops sending."""
    if request.app[GATEWAY].draining:
        return web.json_response({"ready": False, "reason": "draining"}, status=503)
    return web.json_response({"ready": True})


async def list_language_routers(request: web.Request) -> web.Response:
    """The language routers and their models (never any secret), with health."""
    gateway = request.app[GATEWAY]
    now = gateway.clock()
    out = []
    for router in gateway.chat_routers.values():
        states = router.health.health_states(now)  # type: ignore[attr-defined]
        out.append(
            {
                "id": router.id,
                "strategy": router.config.strategy,
                "models": [
                    {
                        "id": m.id,
                        "provider": m.provider_key,
                        "model_name": router.model_info(m.id).model_name,
                        "weight": m.weight,
                        "health": states.get(m.id),
                    }
                    for m in router.config.enabled_models
                ],
            }
        )
    return web.json_response({"routers": out})


async def list_speech_routers(request: web.Request) -> web.Response:
    """The speech routers, each with its speak / listen models (never any secret)."""
    gateway = request.app[GATEWAY]
    now = gateway.clock()
    out = [
        {"id": router_id, **{kind: ep.describe(now) for kind, ep in by_kind.items()}}
        for router_id, by_kind in gateway.speech.items()
    ]
    return web.json_response({"routers": out})


def _chat_router(request: web.Request) -> ChatRouter | web.Response:
    router_id = request.match_info["router"]
    router = request.app[GATEWAY].chat_routers.get(router_id)
    if router is None:
        return error_response(404, ErrorName.ROUTER_NOT_FOUND, f"router {router_id!r} is not found")
    return router


async def chat(request: web.Request) -> web.Response:
    """Glide's `POST /v1/language/{router}/chat`: one completion, with failover."""
    router = _chat_router(request)
    if isinstance(router, web.Response):
        return router
    gateway = request.app[GATEWAY]
    if gateway.draining:
        return error_response(503, ErrorName.SHUTTING_DOWN, "this instance is shutting down")
    gateway.http_in_flight += 1
    try:
        return await _chat(request, router, gateway)
    finally:
        gateway.http_in_flight -= 1
        gateway.work_ended.set()


async def _chat(request: web.Request, router: ChatRouter, gateway: Gateway) -> web.Response:
    try:
        body = await request.json()
    except ValueError as error:
        return error_response(400, ErrorName.PAYLOAD_PARSE_ERROR, f"body is not JSON: {error}")
    try:
        chat_request = ChatRequest.model_validate(body)
    except ValidationError as error:
        return error_response(400, ErrorName.PAYLOAD_PARSE_ERROR, describe_validation_error(error))
    try:
        completion = await to_future(router.complete(chat_request), gateway.scheduler)
    except AllModelsUnavailable as error:
        return error_response(503, ErrorName.ALL_MODELS_UNAVAILABLE, str(error))
    except ProviderError as error:
        if error.category is ErrorCategory.BAD_REQUEST:
            return error_response(400, ErrorName.BAD_REQUEST, str(error))
        return error_response(503, ErrorName.ALL_MODELS_UNAVAILABLE, str(error))
    result = completion.result
    return web.json_response(
        {
            "id": str(uuid.uuid4()),
            "created_at": int(gateway.clock()),
            "provider_id": completion.model.provider_id,
            "router_id": router.id,
            "model_id": completion.model.model_id,
            "model_name": completion.model.model_name,
            "cached": False,
            "model_response": {
                "metadata": result.metadata,
                "message": {"role": result.role, "content": result.content},
                "token_usage": {
                    "prompt_tokens": result.usage.prompt_tokens,
                    "response_tokens": result.usage.response_tokens,
                    "total_tokens": result.usage.total_tokens,
                },
                "finish_reason": result.finish_reason,
            },
        }
    )


async def serve_socket(
    request: web.Request,
    make_pipeline: Callable[[Admission], Pipeline],
    default_type: str,
    router_id: str,
    label: str,
) -> web.StreamResponse:
    """Upgrade to a websocket and run `make_pipeline`'s pipeline on it until it closes.

    Refused before the upgrade (503) while draining or at the socket limit.
    """
    gateway = request.app[GATEWAY]
    limits = gateway.config.limits
    if gateway.draining:
        return error_response(503, ErrorName.SHUTTING_DOWN, "this instance is shutting down")
    if len(gateway.sessions) >= limits.max_sockets:
        return error_response(503, "too_many_sockets", "the socket limit is reached; retry later")
    ws = web.WebSocketResponse(
        heartbeat=gateway.config.server.heartbeat or None,
        max_msg_size=limits.max_frame_bytes,
    )
    await ws.prepare(request)
    session = SocketSession(
        ws,
        default_type=default_type,
        scheduler=gateway.scheduler,
        max_queued_bytes=limits.max_queued_bytes_per_socket,
        router_id=router_id,
        label=label,
    )
    admission = Admission(
        limits.max_requests_per_socket,
        lambda: not gateway.draining,
        on_active_change=session.on_active_change,
    )
    gateway.sessions.add(session)
    try:
        await session.run(make_pipeline(admission))
    finally:
        gateway.sessions.discard(session)
        gateway.work_ended.set()
    return ws


async def chat_stream(request: web.Request) -> web.StreamResponse:
    """Glide's `GET /v1/language/{router}/chatStream` websocket."""
    router = _chat_router(request)
    if isinstance(router, web.Response):
        return router
    gateway = request.app[GATEWAY]
    max_history = gateway.config.limits.max_message_history

    def make_pipeline(admission: Admission) -> Pipeline:
        return chat_stream_pipeline(router, gateway.clock, admission, max_history)

    return await serve_socket(request, make_pipeline, CHAT, router.id, f"chatStream:{router.id}")


async def speech_socket(request: web.Request) -> web.StreamResponse:
    """`GET /v1/speech/{router}/speak` and `.../listen` websockets."""
    router_id = request.match_info["router"]
    kind = request.match_info["endpoint"]
    by_kind = request.app[GATEWAY].speech.get(router_id)
    if by_kind is None:
        return error_response(
            404, ErrorName.ROUTER_NOT_FOUND, f"speech router {router_id!r} is not found"
        )
    endpoint = by_kind.get(kind)
    if endpoint is None:
        return error_response(
            404, ErrorName.ROUTER_NOT_FOUND, f"speech router {router_id!r} has no {kind} models"
        )
    return await serve_socket(
        request, endpoint.pipeline, endpoint.default_type, router_id, f"{kind}:{router_id}"
    )


def build_app(
    config: SluiceConfig, provider_factory: ProviderFactory | None = None
) -> web.Application:
    """An aiohttp app serving `config`; `provider_factory` swaps adapters (tests)."""
    app = web.Application(middlewares=[json_errors])
    app[CONFIG] = config
    if provider_factory is not None:
        app[PROVIDER_FACTORY] = provider_factory
    app.cleanup_ctx.append(gateway_context)
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/v1/health/", health)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/ready", ready)
    app.router.add_get("/v1/language/", list_language_routers)
    app.router.add_get("/v1/language", list_language_routers)
    app.router.add_post("/v1/language/{router}/chat", chat)
    app.router.add_get("/v1/language/{router}/chatStream", chat_stream)
    app.router.add_get("/v1/speech/", list_speech_routers)
    app.router.add_get("/v1/speech", list_speech_routers)
    app.router.add_get("/v1/speech/{router}/{endpoint:speak|listen}", speech_socket)
    return app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice streaming AI gateway")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve every configured endpoint")
    serve.add_argument("--config", help="YAML config file (default: the embedded config)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`sluice serve [--config F] [--host H] [--port P]` or `sluice check-config F`."""
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        problems = check_config(args.file)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{args.file}: OK")
        return 1 if problems else 0
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    server = config.server
    host = getattr(args, "host", None) or server.host
    port = getattr(args, "port", None) or server.port
    configure_logging(server.log_level)
    return asyncio.run(serve(config, host, port))


async def serve(config: SluiceConfig, host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT, then drain (a second signal exits at once)."""
    app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("listening", extra={"host": host, "port": port})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now", extra={"signal": sig.name})
            logging.shutdown()
            os._exit(1)
        log.info("signal received: draining", extra={"signal": sig.name})
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    await drain(app, config.server.drain_grace)
    await runner.cleanup()
    log.info("stopped")
    logging.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
