"""Sluice's HTTP and websocket server, and the `sluice` command line.

`build_app(config)` -> an aiohttp Application serving every configured router;
`main()` parses `sluice serve|check-config|hash-key` and runs it: `serve` runs one
process, or with `--workers N` a supervisor (`serving.supervisor`) and N worker
processes sharing the port, each running `serve()`.

Every request passes the access policy first (`security.access`: client keys,
Origins, router allowlists; refused before any upgrade), then its handler.
`GET /metrics` exposes the app's own Prometheus registry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import importlib
import logging
import os
import random
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError
from reactivex import abc

from apidocs import (
    ASYNCAPI_PATH,
    OPENAPI_PATH,
    build_asyncapi,
    build_openapi,
    document_handler,
)
from config import ConfigError, SluiceConfig, check_config, load_config
from config.coverage import ENDPOINT_SECTIONS, endpoints_without_routers
from config.models import ServerConfig, SpeechRouterConfig
from observability.logs import configure_logging, safe_extra
from observability.metrics import CONTENT_TYPE, Metrics, ModelState, SocketState, StateSource
from observability.network import NETWORK, NetworkMetrics
from observability.telemetry import ERROR, OK, REJECTED, Telemetry
from observability.tracing import Tracing, build_tracing
from openai_api import add_openai_routes
from openai_api.embed_call import EMBEDDING
from openai_api.embed_routes import add_embedding_routes
from operators.aio import to_future
from operators.failover import AllModelsUnavailable
from operators.scheduling import seconds
from pipelines.chat_router import ChatRouter, MissingCapability
from pipelines.chat_stream import CHAT, chat_stream_pipeline, glide_finish_reason
from pipelines.common import Admission, describe_validation_error
from pipelines.endpoint import BuildContext, Pipeline, SocketEndpoint
from playground import client_dir, static_dir
from protocol import jsoncodec
from protocol.chat import ChatRequest
from protocol.frames import ErrorName
from protocol.images import image_problem
from protocol.messages import json_depth_exceeds
from providers.registry import build_chat_provider
from providers.types import ChatProvider, ErrorCategory, ProviderError
from realtime.endpoint import add_realtime_route
from resume.build import build_request_log
from resume.log import RequestLog
from routing.router import ModelRouter
from routing.strategies import build_strategy
from security.access import ACCESS, CLIENT, SUBPROTOCOL, Access, Client, access_middleware
from security.exposure import exposure_problem, is_loopback
from security.hosts import HOSTS, HostPolicy, host_middleware
from security.keys import generate_key, hash_key
from security.limits import LimitPolicy, LimitStore, LocalLimits, SocketCap
from security.redact import Redactor, config_secrets
from security.request_gate import SharedRateGate
from serving.cores import available_cores
from serving.live import following, router_served
from serving.reload import CONFIG_SOURCE, RELOADER, ConfigSource, Reloader
from serving.supervisor import BLOCKED_AT_START, STOP_SIGNALS, Supervisor
from serving.triggers import Triggers, pidfile_for, send_reload
from serving.worker import WorkerSpec, tag_logs, watch_supervisor
from state.health import SHARED_HEALTH, SharedHealth
from state.limits import RedisLimits
from state.link import RedisLink
from state.metrics import state_store_gauge
from transport import loop as event_loop
from transport.http_guard import HTTP_GUARD, ConnectionGuard, guard_connections, guard_middleware
from transport.http_json import json_response
from transport.session import SocketSession
from transport.ws_text import TextFrameSocket

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
    telemetry: Telemetry | None = None
    redact: Redactor = field(default_factory=Redactor)
    state: RedisLink | None = None
    request_log: RequestLog | None = None

    @property
    def busy(self) -> bool:
        """Whether any socket is open or any HTTP request is in flight."""
        return bool(self.sessions) or self.http_in_flight > 0

    def clock(self) -> float:
        """Unix seconds from the app's scheduler."""
        return seconds(self.scheduler)


CONFIG = web.AppKey("config", SluiceConfig)
GATEWAY = web.AppKey("gateway", Gateway)
METRICS = web.AppKey("metrics", Metrics)
ProviderFactory = Callable[[Any, aiohttp.ClientSession], ChatProvider]
PROVIDER_FACTORY = web.AppKey("provider_factory", object)
SPAN_EXPORTER = web.AppKey("span_exporter", object)
STATE_LINK = web.AppKey("state_link", RedisLink)
SHARED_LIMITS = web.AppKey("shared_limits", RedisLimits)


def error_response(
    status: int, name: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Glide's HTTP error body `{name, message}`."""
    return json_response({"name": name, "message": message}, status=status, headers=headers)


class GatewayState(StateSource):
    """The gauges' view of a running gateway: sockets, requests, queues, health."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def _gateway(self) -> Gateway | None:
        return self._app.get(GATEWAY)

    def endpoints(self) -> Iterable[tuple[str, str]]:
        """Every websocket endpoint served: chatStream per language router, speak/listen."""
        gateway = self._gateway()
        if gateway is None:
            return []
        pairs = [("chatStream", router_id) for router_id in gateway.chat_routers]
        pairs += [(kind, rid) for rid, by_kind in gateway.speech.items() for kind in by_kind]
        pairs += [("converse", agent.id) for agent in gateway.config.agent_routers]
        return pairs

    def sockets(self) -> Iterable[SocketState]:
        """Every open websocket."""
        gateway = self._gateway()
        if gateway is None:
            return []
        return [
            SocketState(s.endpoint, s.router_id, len(s.active), s.queue.queued_bytes)
            for s in list(gateway.sessions)
        ]

    def models(self) -> Iterable[ModelState]:
        """Each chat and embedding model's health, and each speech model's from its
        endpoint listing."""
        gateway = self._gateway()
        if gateway is None:
            return []
        now = gateway.clock()
        out: list[ModelState] = []
        for router in gateway.chat_routers.values():
            states = router.health.health_states(now)  # type: ignore[attr-defined]
            for model in router.config.enabled_models:
                provider = router.model_info(model.id).provider_id
                state = states.get(model.id, "")
                out.append(ModelState("chatStream", router.id, model.id, provider, state))
        embedding = self._app.get(EMBEDDING)
        if embedding is not None:
            for embedder in embedding.routers_for(gateway.config).values():
                states = embedder.health.health_states(now)  # type: ignore[attr-defined]
                for embed_model in embedder.models:
                    provider = embedder.provider(embed_model.id).provider_id
                    state = states.get(embed_model.id, "")
                    out.append(ModelState("embed", embedder.id, embed_model.id, provider, state))
        for router_id, by_kind in gateway.speech.items():
            for kind, endpoint in by_kind.items():
                try:
                    models = endpoint.describe(now).get("models", [])
                except Exception:  # a listing bug must not break the scrape
                    log.exception("describe failed", extra={"router": router_id, "endpoint": kind})
                    continue
                for model in models:
                    if isinstance(model, dict) and isinstance(model.get("health"), str):
                        out.append(
                            ModelState(
                                kind,
                                router_id,
                                str(model.get("id")),
                                str(model.get("provider")),
                                model["health"],
                            )
                        )
        return out

    def http_in_flight(self) -> int:
        """HTTP chat calls being answered."""
        gateway = self._gateway()
        return gateway.http_in_flight if gateway is not None else 0

    def draining(self) -> bool:
        """Whether the instance drains."""
        gateway = self._gateway()
        return gateway.draining if gateway is not None else False


def _clock_seconds(scheduler: abc.SchedulerBase) -> float:
    return seconds(scheduler)


def build_chat_routers(
    config: SluiceConfig,
    session: aiohttp.ClientSession,
    scheduler: abc.SchedulerBase,
    factory: ProviderFactory,
    shared: SharedHealth | None = None,
) -> tuple[dict[str, ChatRouter], list[ChatProvider]]:
    """Config + HTTP session -> chat routers by id, and every provider built.

    With `shared` (state.redis) the routers' health verdicts are published to the
    other instances and theirs known so far are applied to the new routers."""
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
            on_event=(
                _health_event(router_config.id)
                if shared is None
                else shared.sink(router_config.id, _health_event(router_config.id))
            ),
        )
        if shared is not None:
            shared.adopt(router_config.id, health, models)
        routers[router_config.id] = ChatRouter(
            router_config, built, health, random.Random(), scheduler
        )
    return routers, providers


def _health_event(router_id: str) -> Callable[[str, dict[str, Any]], None]:
    def on_event(event: str, fields: dict[str, Any]) -> None:
        log.error(
            event, extra=safe_extra({"router": router_id, "endpoint": "chatStream", **fields})
        )

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
    scheduler = event_loop.LoopScheduler(asyncio.get_running_loop())
    tracing: Tracing | None = build_tracing(config.tracing, exporter=app.get(SPAN_EXPORTER))
    telemetry = Telemetry(lambda: _clock_seconds(scheduler), app.get(METRICS), tracing)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    session = aiohttp.ClientSession(connector=connector)
    link = app.get(STATE_LINK)
    shared = SharedHealth(link, lambda: _clock_seconds(scheduler)) if link else None
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
    restart = gateway.config.resume.on_drain == "restart"
    for session in list(gateway.sessions):
        session.drain(restart=restart)
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


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown routes, wrong methods, oversized bodies and aiohttp's own 400s (a
    websocket route asked without an upgrade) answer in Glide's `{name, message}` shape."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return error_response(
            404, ErrorName.ROUTE_NOT_FOUND, "requested route is not found or method is not allowed"
        )
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413,
            ErrorName.PAYLOAD_TOO_LARGE,
            f"the request body is larger than {request.app[CONFIG].limits.text_frame_bytes} bytes",
        )
    except web.HTTPBadRequest as error:  # e.g. a websocket route without an upgrade
        return error_response(400, ErrorName.INVALID_REQUEST, error.text or "bad request")


async def health(_: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return json_response({"healthy": True})


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


def _client(request: web.Request) -> Client:
    return request[CLIENT]


async def list_language_routers(request: web.Request) -> web.Response:
    """The language routers and their models (never any secret), with health.

    A key limited to some routers sees only those.
    """
    gateway = request.app[GATEWAY]
    client = _client(request)
    now = gateway.clock()
    out = []
    for router in gateway.chat_routers.values():
        if not client.may_use(router.id):
            continue
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
                        "capabilities": sorted(router.capabilities(m.id)),
                    }
                    for m in router.config.enabled_models
                ],
            }
        )
    return json_response({"routers": out})


async def list_speech_routers(request: web.Request) -> web.Response:
    """The speech routers, each with its speak / listen models (never any secret)."""
    gateway = request.app[GATEWAY]
    client = _client(request)
    now = gateway.clock()
    out = [
        {"id": router_id, **{kind: ep.describe(now) for kind, ep in by_kind.items()}}
        for router_id, by_kind in gateway.speech.items()
        if client.may_use(router_id)
    ]
    return json_response({"routers": out})


def _chat_router(request: web.Request) -> ChatRouter | web.Response:
    router_id = request.match_info["router"]
    router = request.app[GATEWAY].chat_routers.get(router_id)
    if router is None:
        return error_response(404, ErrorName.ROUTER_NOT_FOUND, f"router {router_id!r} is not found")
    return router


async def chat(request: web.Request) -> web.Response:
    """Glide's `POST /v1/language/{router}/chat`: one completion, with failover.

    The caller's request rate applies (429 `rate_limited` with Retry-After).
    """
    router = _chat_router(request)
    if isinstance(router, web.Response):
        return router
    gateway = request.app[GATEWAY]
    telemetry = gateway.telemetry or Telemetry(gateway.clock)
    if gateway.draining:
        telemetry.rejected(CHAT, router.id, ErrorName.SHUTTING_DOWN)
        return error_response(503, ErrorName.SHUTTING_DOWN, "this instance is shutting down")
    client = _client(request)
    wait = await client.admit_request(gateway.clock())
    if wait is not None:
        telemetry.rejected(CHAT, router.id, ErrorName.RATE_LIMITED)
        return error_response(
            429,
            ErrorName.RATE_LIMITED,
            f"this API key's request rate is used up; retry in {wait:.3f} s",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )
    gateway.http_in_flight += 1
    try:
        return await _chat(request, router, gateway, telemetry, client)
    finally:
        gateway.http_in_flight -= 1
        gateway.work_ended.set()


async def _chat(
    request: web.Request,
    router: ChatRouter,
    gateway: Gateway,
    telemetry: Telemetry,
    client: Client,
) -> web.Response:
    request_id = str(uuid.uuid4())
    tracked = telemetry.request(CHAT, router.id, request_id, key_id=client.key_id)

    def refuse(status: int, name: str, message: str, outcome: str = REJECTED) -> web.Response:
        tracked.finish(outcome, error=name)
        return error_response(status, name, gateway.redact(message))

    try:
        body = jsoncodec.loads(await request.read())
    except (ValueError, RecursionError) as error:
        return refuse(400, ErrorName.PAYLOAD_PARSE_ERROR, f"body is not JSON: {error}")
    if json_depth_exceeds(body):
        return refuse(400, ErrorName.INVALID_REQUEST, "the body nests JSON too deeply")
    try:
        chat_request = ChatRequest.model_validate(body)
    except ValidationError as error:
        return refuse(400, ErrorName.PAYLOAD_PARSE_ERROR, describe_validation_error(error))
    max_history = gateway.config.limits.max_message_history
    if len(chat_request.message_history) > max_history:
        return refuse(
            400,
            ErrorName.MESSAGE_HISTORY_TOO_LONG,
            f"message_history has {len(chat_request.message_history)} messages; "
            f"the limit is {max_history}",
        )
    problem = image_problem(chat_request.images(), gateway.config.limits.images)
    if problem is not None:
        return refuse(400, ErrorName.INVALID_IMAGE, problem)
    try:
        completion = await to_future(
            router.complete(chat_request, telemetry=tracked), gateway.scheduler
        )
    except asyncio.CancelledError:
        tracked.finish("aborted")
        raise
    except AllModelsUnavailable as error:
        return refuse(503, ErrorName.ALL_MODELS_UNAVAILABLE, str(error), ERROR)
    except MissingCapability as error:
        return refuse(400, ErrorName.UNSUPPORTED_CAPABILITY, str(error))
    except ProviderError as error:
        if error.category is ErrorCategory.BAD_REQUEST:
            return refuse(400, ErrorName.BAD_REQUEST, str(error), ERROR)
        return refuse(503, ErrorName.ALL_MODELS_UNAVAILABLE, str(error), ERROR)
    except Exception as error:
        log.exception("chat failed", extra={"request_id": request_id, "router": router.id})
        message = f"internal error: {type(error).__name__}"
        return refuse(500, ErrorName.UNKNOWN_ERROR, message, ERROR)
    tracked.output()
    tracked.finish(OK)
    result = completion.result
    answer: dict[str, Any] = {"role": result.role, "content": result.content}
    if result.tool_calls:
        answer["tool_calls"] = [
            {"index": index, **call.to_json()} for index, call in enumerate(result.tool_calls)
        ]
    finish = glide_finish_reason(result.finish_reason)
    model_response: dict[str, Any] = {
        "metadata": result.metadata,
        "message": answer,
        "token_usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "response_tokens": result.usage.response_tokens,
            "total_tokens": result.usage.total_tokens,
        },
        "finish_reason": finish,
    }
    if finish != result.finish_reason:
        model_response["finish_detail"] = result.finish_reason
    return json_response(
        {
            "id": request_id,
            "created_at": int(gateway.clock()),
            "provider_id": completion.model.provider_id,
            "router_id": router.id,
            "model_id": completion.model.model_id,
            "model_name": completion.model.model_name,
            "cached": False,
            "model_response": model_response,
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

    Refused before the upgrade while draining (503), at the socket limit (503) or
    at the caller's own socket limit (429); both limits count every worker's
    sockets. The server's subprotocol `sluice.v1` is selected when the client
    offers it (browsers sending their key as `sluice.auth.<key>` must offer it too).
    """
    gateway = request.app[GATEWAY]
    limits = gateway.config.limits
    endpoint = label.split(":", 1)[0]
    telemetry = gateway.telemetry or Telemetry(gateway.clock)
    client = _client(request)
    if gateway.draining:
        telemetry.rejected(endpoint, router_id, ErrorName.SHUTTING_DOWN, request=False)
        return error_response(503, ErrorName.SHUTTING_DOWN, "this instance is shutting down")
    # counted before the handshake awaits, so simultaneous upgrades cannot overshoot
    # (with state.redis: atomically in Redis, across instances)
    refused = await client.admit_socket()
    if refused is not None:
        telemetry.rejected(endpoint, router_id, ErrorName.TOO_MANY_SOCKETS, request=False)
        if refused is SocketCap.SERVER:
            return error_response(
                503, ErrorName.TOO_MANY_SOCKETS, "the socket limit is reached; retry later"
            )
        return error_response(
            429,
            ErrorName.TOO_MANY_SOCKETS,
            f"this API key already has {client.max_sockets} websockets open (its limit)",
        )
    socket_counted = True
    # with state.redis a request's token is awaited before admission (one round trip)
    gate = SharedRateGate(client, gateway.clock) if client.shared is not None else None
    try:
        ws = TextFrameSocket(
            text_limit=limits.text_frame_bytes,
            on_heartbeat_timeout=request.app[NETWORK].heartbeat_timeouts.labels(endpoint).inc,
            heartbeat=gateway.config.server.heartbeat or None,
            max_msg_size=max(limits.text_frame_bytes, limits.binary_frame_bytes),
            protocols=(SUBPROTOCOL,),
        )
        await ws.prepare(request)
        session = SocketSession(
            ws,
            default_type=default_type,
            scheduler=gateway.scheduler,
            max_queued_bytes=limits.max_queued_bytes_per_socket,
            router_id=router_id,
            label=label,
            endpoint=endpoint,
            max_text_bytes=limits.text_frame_bytes,
            max_binary_bytes=limits.binary_frame_bytes,
            telemetry=telemetry,
            key_id=client.key_id,
            transport=request.transport,
            close_timeout=limits.slow_consumer_close_timeout,
            redact=gateway.redact or None,
            request_log=gateway.request_log,
            detached_timeout=gateway.config.resume.detached_timeout,
            gate=gate,
        )

        def rate_limit() -> float | None:
            return client.take_request(gateway.clock())

        admission = Admission(
            limits.max_requests_per_socket,
            lambda: not gateway.draining,
            on_active_change=session.on_active_change,
            rate_limit=gate.take if gate is not None else rate_limit,
            max_metadata_bytes=limits.max_metadata_bytes,
            request_telemetry=session.request_telemetry,
            key_id=client.key_id,
            router_present=lambda: router_served(gateway, endpoint, router_id),
            resumed=session.take_resumed,
        )
        gateway.sessions.add(session)
        try:
            try:
                await session.run(make_pipeline(admission))
            finally:
                client.close_socket()
                socket_counted = False
            # requests of a lost socket run on (to be resumed) and count as work
            await session.wait_detached()
        finally:
            gateway.sessions.discard(session)
            gateway.work_ended.set()
    finally:
        if socket_counted:
            client.close_socket()
    return ws


async def chat_stream(request: web.Request) -> web.StreamResponse:
    """Glide's `GET /v1/language/{router}/chatStream` websocket."""
    router = _chat_router(request)
    if isinstance(router, web.Response):
        return router
    gateway = request.app[GATEWAY]
    max_history = gateway.config.limits.max_message_history
    images = gateway.config.limits.images

    # new requests on this socket use the router a config reload put in its place
    live = following(lambda: gateway.chat_routers, router)

    def make_pipeline(admission: Admission) -> Pipeline:
        return chat_stream_pipeline(live, gateway.clock, admission, max_history, images)

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


async def converse_socket(request: web.Request) -> web.StreamResponse:
    """`GET /v1/agent/{router}/converse`: a voice conversation (pipelines/converse.py)."""
    from pipelines import converse  # imported on first use: it loads the speech engines

    router_id = request.match_info["router"]
    gateway = request.app[GATEWAY]

    def resolve() -> converse.AgentStages | str:
        for agent in gateway.config.agent_routers:
            if agent.id == router_id:
                return converse.resolve_stages(agent, gateway.chat_routers, gateway.speech)
        return f"agent router {router_id!r} is not found"

    found = resolve()
    if isinstance(found, str):
        return error_response(404, ErrorName.ROUTER_NOT_FOUND, found)

    def make_pipeline(admission: Admission) -> Pipeline:
        return converse.converse_pipeline(router_id, resolve, gateway.clock, admission)

    label = f"{converse.CONVERSE_ENDPOINT}:{router_id}"
    return await serve_socket(request, make_pipeline, "converse", router_id, label)


async def list_agent_routers(request: web.Request) -> web.Response:
    """The agent routers: which listen, chat and speak routers each composes."""
    gateway = request.app[GATEWAY]
    client = _client(request)
    out = [
        {
            "id": agent.id,
            "listen": agent.listen,
            "chat": agent.chat,
            "speak": agent.speak,
            "voice": agent.voice,
            "turn": agent.turn.model_dump(),
        }
        for agent in gateway.config.agent_routers
        if client.may_use(agent.id)
    ]
    return json_response({"routers": out})


async def playground_redirect(_: web.Request) -> web.Response:
    """`/playground` -> `/playground/`, so the page's relative asset paths resolve."""
    raise web.HTTPFound("/playground/")


async def playground_index(_: web.Request) -> web.FileResponse:
    """The browser playground (static files; it speaks the same websocket protocol)."""
    return web.FileResponse(static_dir() / "index.html")


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
    app.router.add_get("/playground", playground_redirect)
    app.router.add_get("/playground/", playground_index)
    js_client = client_dir()
    if js_client is not None:
        app.router.add_static("/playground/sluice-client/", js_client)
    app.router.add_static("/playground/", static_dir())
    return app


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from error
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1 worker")
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice streaming AI gateway")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve every configured endpoint")
    serve.add_argument("--config", help="YAML config file (default: the embedded config)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument(
        "--pidfile",
        help="where to write the server's pid for `sluice reload` "
        "(default: $XDG_RUNTIME_DIR or the temp dir, sluice-PORT.pid)",
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        help="processes serving the port (default: one per core this process may use; "
        "1 runs a single process without a supervisor)",
    )
    reload = sub.add_parser(
        "reload",
        help="make a running server re-read its config (sends it SIGHUP)",
        description="Send SIGHUP to the server whose pid is in the pidfile; with --config "
        "the file is checked first and nothing is sent if it has problems.",
    )
    reload.add_argument("--config", help="check this config file before signalling")
    reload.add_argument("--pidfile", help="the server's pidfile (default: from --port)")
    reload.add_argument("--port", type=int, help="the server's port (default: 9099)")
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    hashing = sub.add_parser(
        "hash-key",
        help="hash a client API key for auth.keys (reads the key from stdin)",
        description="Print the `hash:` value for a client key in auth.keys. The key is read "
        "from standard input (never from the command line, where `ps` would show it); "
        "with --generate a new random key is made and printed first.",
    )
    hashing.add_argument("--generate", action="store_true", help="make a new random key")
    hashing.add_argument(
        "--scheme",
        choices=("sha256", "scrypt"),
        default="sha256",
        help="sha256 (default; right for generated keys) or scrypt (for keys people chose)",
    )
    return parser


def _reload_port(args: argparse.Namespace) -> int:
    """`sluice reload`'s server port: --port, else the config file's, else the default."""
    if args.port:
        return int(args.port)
    if args.config:
        with contextlib.suppress(ConfigError):
            return load_config(args.config).server.port
    return ServerConfig().port


def _hash_key_command(generate: bool, scheme: str) -> int:
    if generate:
        key = generate_key()
        print(f"key:  {key}")
        print(f"hash: {hash_key(key, scheme)}")
        return 0
    if sys.stdin.isatty():
        key = getpass.getpass("client key: ")
    else:
        key = sys.stdin.readline().strip()
    if not key:
        print("no key given on standard input", file=sys.stderr)
        return 2
    print(hash_key(key, scheme))
    return 0


def _log_crashes() -> None:
    """Uncaught exceptions (main thread, threads, the event loop) go to the JSON log,
    through the redacting formatter, instead of a raw traceback on stderr."""
    crash_log = logging.getLogger("sluice.crash")

    def excepthook(
        kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        crash_log.critical("uncaught exception", exc_info=(kind, error, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            crash_log.critical(
                "uncaught exception in a thread",
                exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
                extra={"thread_name": args.thread.name if args.thread else None},
            )

    sys.excepthook = excepthook
    threading.excepthook = thread_hook


def main(argv: Sequence[str] | None = None) -> int:
    """`sluice serve [--config F] [--host H] [--port P] [--workers N]`, `sluice
    check-config F` or `sluice hash-key [--generate] [--scheme sha256|scrypt]`."""
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        problems = check_config(args.file)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{args.file}: OK")
        return 1 if problems else 0
    if args.command == "hash-key":
        return _hash_key_command(args.generate, args.scheme)
    if args.command == "reload":
        return send_reload(args.pidfile or pidfile_for(_reload_port(args)), args.config)
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    server = config.server
    host = getattr(args, "host", None) or server.host
    port = getattr(args, "port", None) or server.port
    refusal = exposure_problem(host, config.auth)
    if refusal is not None:
        print(f"sluice: {refusal}", file=sys.stderr)
        return 2
    configure_logging(server.log_level, redact=Redactor(config_secrets(config)))
    _log_crashes()
    workers = args.workers or available_cores()
    path, pidfile = args.config, args.pidfile or pidfile_for(port)
    if workers == 1:
        return run_loop(serve(config, host, port, config_path=path, pidfile=pidfile))
    supervisor = Supervisor(
        config, host, port, workers, serve_worker, config_path=path, pidfile=pidfile
    )
    return supervisor.run()


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on a new event loop and return its result: the one place a serving
    process (single, or each worker) chooses its loop (uvloop where installed)."""
    return event_loop.run(main)


def serve_worker(spec: WorkerSpec) -> None:
    """A worker process of `sluice serve --workers N`: serve `spec` until drained;
    the exit status is `serve`'s (run by the supervisor, in a spawned process)."""
    os.setpgrp()  # signals reach the supervisor alone; it forwards them
    config = spec.config
    configure_logging(config.server.log_level, redact=Redactor(config_secrets(config)))
    tag_logs(spec)
    _log_crashes()
    code = run_loop(serve(config, spec.host, spec.port, worker=spec, config_path=spec.config_path))
    if code:
        sys.exit(code)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    logging.getLogger("sluice.crash").error(
        str(context.get("message", "unhandled error in the event loop")),
        exc_info=error if isinstance(error, BaseException) else None,
    )


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections: request pipelines allocate many short-lived cycles.

    Everything built at start-up (modules, config, engines) moves to the permanent
    generation so full collections skip it, and the young generation is collected
    less often; measured in the benchmark suite, full collections were the p99 spikes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def serve(
    config: SluiceConfig,
    host: str,
    port: int,
    worker: WorkerSpec | None = None,
    *,
    config_path: str | None = None,
    pidfile: str | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then drain (a second signal exits at once).
    SIGHUP reloads `config_path` (None: the embedded default), see `serving.reload`;
    alone, the process writes `pidfile` and watches the file if the config says so.

    As one `worker` of several: share the port (SO_REUSEPORT), the limit store
    and the metrics directory, and drain too if the supervisor goes away."""
    app = build_app(config, worker=worker)
    app[CONFIG_SOURCE] = ConfigSource(config_path, host)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    guard_connections(runner)
    site = web.TCPSite(runner, host, port, reuse_port=worker is not None)
    await site.start()
    publishing = asyncio.create_task(publish_metrics_state(app)) if worker else None
    tune_garbage_collector()
    log.info("listening", extra={"host": host, "port": port, "loop": event_loop.loop_name()})
    if not config.auth.keys and (worker is None or worker.slot == 0):
        if is_loopback(host):
            log.warning(
                "no client API keys configured: serving without authentication, on "
                "loopback only (add auth.keys to serve other machines)",
                extra={"host": host},
            )
        else:
            log.warning(
                "no client API keys configured and auth.allow_unauthenticated is true: "
                "anyone who reaches this address can use Sluice",
                extra={"host": host},
            )
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception)
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now", extra={"signal": sig.name})
            logging.shutdown()
            os._exit(1)
        log.info("signal received: draining", extra={"signal": sig.name})
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    alone = worker is None  # else the supervisor holds the pidfile and watches the file
    triggers = Triggers(
        loop,
        app[RELOADER].reload,
        watch=config_path if alone and config.server.watch_config else None,
        pidfile=pidfile if alone else None,
    )
    # a supervisor's workers start with these blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED_AT_START)
    if worker is not None:
        watch_supervisor(loop, stop)
    await stop.wait()
    triggers.stop()
    await drain(app, config.server.drain_grace)
    if publishing is not None:
        publishing.cancel()
    await runner.cleanup()
    log.info("stopped")
    logging.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
