"""`GET /v1/realtime?model=<agent router>`: the OpenAI Realtime API over a conversation.

    websocket text frames ─► parse_client_event ─► Bridge ─► Subject[ConversationInput]
        ─► converse (pipelines.conversation: hear, chat, speak) ─► Bridge
        ─► server events ─► OutboundQueue (bounded) ─► the writer task ─► websocket

One session per socket (the Realtime API's model). Only the handler task reads
the socket; one writer task writes it. Before the upgrade the request passes the
same checks as the other OpenAI-compatible endpoints (key, router allowlist,
drain, socket caps), answered as OpenAI's error object. The dialect follows the
client: `OpenAI-Beta: realtime=v1` (what the SDK's `beta.realtime` sends) gets
the beta event names and shapes, anything else the GA ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from reactivex import Observable, abc
from reactivex.subject import Subject

from audio.sentences import TextPiece
from observability.telemetry import ABORTED, ERROR, OK, Telemetry
from openai_api.errors import MODEL_NOT_FOUND, ApiError, openai_errors
from openai_api.gate import accepting, allowed, authenticated
from openai_api.types import GatewayKey, GatewayView
from pipelines.conversation import converse
from pipelines.conversation_types import (
    ConversationEvent,
    ConversationInput,
    ConversationSettings,
)
from pipelines.converse import AgentStages, conversation_parts, resolve_stages
from pipelines.speech_out import Spoken, speak_text
from protocol import jsoncodec
from protocol.converse import ConverseRequestIn
from protocol.frames import ErrorName
from realtime.bridge import Bridge
from realtime.client_events import parse_client_event
from realtime.formats import PIPELINE_RATE, SPEAK_RATE
from realtime.ids import Ids
from realtime.problems import Problem
from realtime.server_events import ServerEvents
from realtime.session import Dialect, SessionSettings, TurnDetection
from realtime.voices import speak_voice
from security.limits import SocketCap
from transport.outbound import OutboundQueue

log = logging.getLogger("sluice.realtime")

REALTIME = "realtime"
MAX_BUFFER_SECONDS = 300
"""Audio a session may buffer (turn detection off) before it must commit or clear."""

_SESSIONS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("realtime_sessions")


def add_realtime_route(app: web.Application, gateway_key: GatewayKey) -> None:
    """Add `GET /v1/realtime` (websocket); open sessions get 1001 when the app shuts down."""
    sessions: set[web.WebSocketResponse] = set()
    app[_SESSIONS] = sessions
    app.router.add_get("/v1/realtime", openai_errors(realtime_handler(gateway_key)))
    app.on_shutdown.append(_close_sessions)


async def _close_sessions(app: web.Application) -> None:
    sessions = app[_SESSIONS]
    for ws in list(sessions):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


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
            request.app[_SESSIONS].add(ws)
            telemetry = gateway.telemetry or Telemetry(gateway.clock)
            session = RealtimeSession(
                ws, gateway, stages, dialect_of(request), telemetry, client.key_id
            )
            await session.run()
        finally:
            request.app[_SESSIONS].discard(ws)
            client.close_socket()
        return ws

    return handler


class RealtimeSession:
    """One Realtime socket: its reader (the handler task), conversation and writer."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        gateway: GatewayView,
        stages: AgentStages,
        dialect: Dialect,
        telemetry: Telemetry,
        key_id: str | None,
    ) -> None:
        self.ws = ws
        self.gateway = gateway
        self.scheduler: abc.SchedulerBase = gateway.scheduler
        self.ids = Ids()
        session_id = self.ids.make("sess")
        agent = stages.config
        self.tracked = telemetry.request(REALTIME, agent.id, session_id, key_id=key_id)
        listen_format = {"encoding": "pcm_s16le", "sample_rate": PIPELINE_RATE, "channels": 1}
        request = ConverseRequestIn.model_validate(
            {"format": listen_format, "interim_results": False}
        )
        parts = conversation_parts(
            stages, request, session_id, SPEAK_RATE, gateway.clock, self.tracked
        )
        speak_router, tracked = stages.speak, self.tracked

        def speaker(voice: str | None) -> Callable[[Observable[TextPiece]], Observable[Spoken]]:
            return speak_text(speak_router, speak_voice(voice), SPEAK_RATE, session_id, tracked)

        self.parts = replace(parts, speak=speaker)
        self.conversation = ConversationSettings(
            instructions=agent.instructions,
            voice=agent.voice,
            max_history=agent.turn.max_history_messages,
            turn_detection=agent.turn.turn_detection,
        )
        settings = SessionSettings(
            id=session_id,
            model=agent.id,
            instructions=agent.instructions or "",
            voice=agent.voice,
            turn_detection=TurnDetection() if agent.turn.turn_detection else None,
            transcription_model=agent.listen,
        )
        self.queue = OutboundQueue(gateway.config.limits.max_queued_bytes_per_socket)
        self.inputs: Subject[ConversationInput] = Subject()
        loop = asyncio.get_running_loop()
        self.bridge = Bridge(
            settings,
            ServerEvents(dialect, self.ids),
            self.ids,
            self.inputs.on_next,
            self.emit,
            MAX_BUFFER_SECONDS * PIPELINE_RATE * 2,
            loop.call_soon,
        )
        self.failed = False

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one server event for the writer (the socket is cut on overflow)."""
        if not self.queue.put(jsoncodec.dumps(event), True):
            self.failed = True

    async def _writer(self) -> None:
        while True:
            items = await self.queue.get_all()
            if items is None:
                break
            for payload, _, _ in items:
                await self.ws.send_str(payload.decode())
                self.queue.sent(len(payload))
        if self.queue.overflowed:
            await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"client too slow")
        elif self.failed:  # the conversation ended in an error: the session cannot go on
            await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"conversation failed")

    def _on_event(self, event: ConversationEvent) -> None:
        self.bridge.on_event(event)

    def _on_error(self, error: Exception) -> None:
        log.warning(
            "realtime conversation failed",
            extra={"router": self.tracked.router, "request_id": self.tracked.request_id},
        )
        self.failed = True
        message = self.gateway.redact(f"the conversation cannot go on: {error}")
        self.bridge.fail(Problem("conversation_failed", message, type="server_error"))
        self.queue.close()

    async def run(self) -> None:
        """Serve the socket until the client leaves (or the conversation fails)."""
        writer = asyncio.create_task(self._writer())
        subscription = self.inputs.pipe(converse(self.parts, self.conversation)).subscribe(
            self._on_event, self._on_error, scheduler=self.scheduler
        )
        outcome = ABORTED
        try:
            self.bridge.start()
            async for message in self.ws:
                if message.type is WSMsgType.TEXT:
                    self._on_text(message.data)
                elif message.type is WSMsgType.BINARY:
                    self.bridge.fail(
                        Problem(
                            "invalid_value",
                            "binary frames are not part of the Realtime protocol: send "
                            "input_audio_buffer.append with base64 audio",
                        )
                    )
                if self.failed:
                    break
            outcome = ERROR if self.failed else OK
        finally:
            subscription.dispose()
            self.queue.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 2.0)
            writer.cancel()
            if not self.ws.closed:
                code = WSCloseCode.INTERNAL_ERROR if self.failed else WSCloseCode.OK
                await self.ws.close(code=code)
            self.tracked.finish(outcome)

    def _on_text(self, text: str) -> None:
        try:
            event = parse_client_event(text)
        except Problem as problem:
            self.bridge.fail(problem)
            return
        self.bridge.on_client_event(event)
