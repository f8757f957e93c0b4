"""`GET /v1/realtime?model=<agent router>`: the OpenAI Realtime API over a conversation.

    upgrade request ─► key, allowlist, drain, socket caps, agent ─► RealtimeSession.run
    (realtime.connection: the socket's reader, conversation and writer)

One session per socket (the Realtime API's model). Before the upgrade the request passes the
same checks as the other OpenAI-compatible endpoints (key, router allowlist,
drain, socket caps), answered as OpenAI's error object. The dialect follows the
client: `OpenAI-Beta: realtime=v1` (what the SDK's `beta.realtime` sends) gets
the beta event names and shapes, anything else the GA ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from observability.telemetry import Telemetry
from openai_api.errors import MODEL_NOT_FOUND, ApiError, openai_errors
from openai_api.gate import accepting, allowed, authenticated
from openai_api.types import GatewayKey, GatewayView
from pipelines.converse import AgentStages, resolve_stages
from protocol.frames import ErrorName
from realtime.connection import RealtimeSession
from realtime.session import Dialect
from security.limits import SocketCap


def add_realtime_route(app: web.Application, gateway_key: GatewayKey) -> None:
    """Add `GET /v1/realtime` (websocket). Its sessions join the gateway's open sockets:
    the gauges count them and a drain (or shutdown) tells them like any other socket."""
    app.router.add_get("/v1/realtime", openai_errors(realtime_handler(gateway_key)))


def dialect_of(request: web.Request) -> Dialect:
    """`OpenAI-Beta: realtime=v1` in; "beta" out (else "ga")."""
    beta = request.headers.get("OpenAI-Beta", "")
    return "beta" if "realtime=v1" in beta.replace(" ", "") else "ga"


def _agent(gateway: GatewayView, router_id: str) -> AgentStages:
    for agent in gateway.config.agent_routers:
        if agent.id == router_id:
            stages = resolve_stages(agent, gateway.chat_routers, gateway.speech)
            if isinstance(stages, str):
                raise ApiError(503, stages, code=ErrorName.ALL_MODELS_UNAVAILABLE)
            return stages
    served = ", ".join(a.id for a in gateway.config.agent_routers) or "none"
    raise ApiError(
        404,
        f"model {router_id!r} is not an agent router of this gateway (served: {served})",
        code=MODEL_NOT_FOUND,
        param="model",
    )


def realtime_handler(
    gateway_key: GatewayKey,
) -> Callable[[web.Request], Any]:
    """The `/v1/realtime` handler reading the gateway under `gateway_key` per request."""

    async def handler(request: web.Request) -> web.StreamResponse:
        gateway: GatewayView = request.app[gateway_key]
        client = authenticated(request)
        router_id = request.query.get("model", "")
        if not router_id:
            raise ApiError(400, "name an agent router: /v1/realtime?model=<router>", param="model")
        allowed(client, router_id)
        accepting(gateway)
        stages = _agent(gateway, router_id)
        refused = client.open_socket()
        if refused is not None:
            status = 503 if refused is SocketCap.SERVER else 429
            raise ApiError(
                status, "the websocket limit is reached", code=ErrorName.TOO_MANY_SOCKETS
            )
        limits = gateway.config.limits
        ws = web.WebSocketResponse(
            heartbeat=gateway.config.server.heartbeat or None,
            max_msg_size=max(limits.text_frame_bytes, limits.binary_frame_bytes),
        )
        try:
            await ws.prepare(request)
            telemetry = gateway.telemetry or Telemetry(gateway.clock)
            session = RealtimeSession(
                ws, gateway, stages, dialect_of(request), telemetry, client.key_id
            )
            gateway.sessions.add(session)
            try:
                # the drain began during the upgrade: session.created, then 1001
                session.draining = gateway.draining
                await session.run()
            finally:
                gateway.sessions.discard(session)
                gateway.work_ended.set()
        finally:
            client.close_socket()
        return ws

    return handler
