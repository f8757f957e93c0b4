"""The websocket endpoints: chatStream, speak / listen, converse.

An upgrade request in; the socket served by its endpoint's pipeline until it closes
out. `serve_socket` is the shared part: refusals before the upgrade (draining,
socket limits), the `SocketSession`, and the per-socket admission.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.core import GATEWAY
from glide_api.errors import error_response
from glide_api.lookup import caller, chat_router
from observability.network import NETWORK
from observability.telemetry import Telemetry
from pipelines.chat_stream import CHAT, chat_stream_pipeline
from pipelines.common import Admission
from pipelines.endpoint import Pipeline
from protocol.frames import ErrorName
from security.access import SUBPROTOCOL
from security.limits import SocketCap
from security.request_gate import SharedRateGate
from serving.live import following, router_served
from transport.session import SocketSession
from transport.ws_text import TextFrameSocket


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
    client = caller(request)
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
            client_resumes=request.query.get("resume") == "1",
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
    router = chat_router(request)
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
