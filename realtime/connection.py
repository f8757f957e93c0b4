"""One Realtime socket at work: its reader, its conversation, its writer, and how it
ends (the client leaving, the conversation failing, a drain, a shutdown).

    websocket text frames ─► parse_client_event ─► Bridge ─► Subject[ConversationInput]
        ─► converse (pipelines.conversation: hear, chat, speak) ─► Bridge
        ─► server events ─► OutboundQueue (bounded) ─► the writer task ─► websocket

Only the run task reads the socket; the writer task writes it and closes it. The
session is one of the gateway's open sockets (`transport.open_socket.OpenSocket`):
its running response is its one request in flight for the gauges, and a drain waits
for it (the socket closes with 1001 once the response is done; an idle session
closes at once), or under `resume.on_drain: restart` cuts it at once with 1012 (a
Realtime client cannot resume, so the response is not kept). At the drain's grace
deadline a response still running is cut: an `error` event (`server_error`,
`shutting_down`), then 1001.
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
from openai_api.types import GatewayView
from pipelines.conversation import converse
from pipelines.conversation_types import (
    ConversationEvent,
    ConversationInput,
    ConversationSettings,
)
from pipelines.converse import AgentStages, conversation_parts
from pipelines.speech_out import Spoken, speak_text
from protocol import jsoncodec
from protocol.converse import ConverseRequestIn
from realtime.bridge import Bridge
from realtime.client_events import parse_client_event
from realtime.formats import PIPELINE_RATE, SPEAK_RATE
from realtime.ids import Ids
from realtime.problems import Problem
from realtime.server_events import ServerEvents
from realtime.session import Dialect, SessionSettings, TurnDetection
from realtime.voices import speak_voice
from transport.outbound import OutboundQueue

log = logging.getLogger("sluice.realtime")

REALTIME = "realtime"
"""The endpoint's name in metrics, logs and telemetry."""

MAX_BUFFER_SECONDS = 300
"""Audio a session may buffer (turn detection off) before it must commit or clear."""

CLOSE_LINGER = 0.25
"""Seconds between a server-ended session's last event and its close frame."""

RESTART = 1012
"""The close code of a `restart` drain: the server restarts, reconnect."""


class RealtimeSession:
    """One Realtime socket: its reader (the run task), conversation and writer."""

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
        self.endpoint = REALTIME
        self.router_id = agent.id
        self.client_resumes = False  # the Realtime protocol has no resume
        self.closed = asyncio.Event()
        self.telemetry = telemetry
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
        self.draining = False
        self.close_with: tuple[int, str] | None = None
        """Set when the server ends the session: the code and reason the writer closes with."""

    # ---- one of the gateway's open sockets -------------------------------------------

    @property
    def active(self) -> tuple[str, ...]:
        """The work in flight: the running (or asked-for) response, as one request."""
        return (self.tracked.request_id,) if self.bridge.busy else ()

    def flush_counts(self) -> None:
        """Nothing batched: the Realtime socket counts no frames."""

    def drain(self, restart: bool = False) -> None:
        """The server drains: an idle session closes with 1001 now, a busy one once its
        response is done, or (with `restart`) at once with 1012."""
        self.draining = True
        if not self.bridge.busy:
            self._close(WSCloseCode.GOING_AWAY, "server draining")
        elif restart:
            self._log("drain: closing a busy session with 1012")
            self.bridge.fail(
                Problem(
                    "server_restarting",
                    "this instance is restarting; the response in flight is cut: "
                    "reconnect and ask again",
                    type="server_error",
                )
            )
            self._close(RESTART, "server restarting: reconnect")

    def end_now(self, clock: Callable[[], float]) -> None:
        """The drain's grace is over: a response still running is cut (`error`
        `shutting_down`), and the session closes with 1001."""
        if self.bridge.busy and self.close_with is None:
            self._log("grace over: cutting the response in flight")
            self.bridge.fail(
                Problem(
                    "shutting_down",
                    "this instance is shutting down; the response in flight is cut: "
                    "reconnect and ask again",
                    type="server_error",
                )
            )
        self._close(WSCloseCode.GOING_AWAY, "server shutting down")

    def _settle(self) -> None:
        """After each event: a draining session closes once its response is done."""
        if self.draining and self.close_with is None and not self.bridge.busy:
            self._close(WSCloseCode.GOING_AWAY, "server draining")

    def _close(self, code: int, reason: str) -> None:
        """The writer sends what is queued, then closes with `code`."""
        if self.close_with is None:
            self.close_with = (code, reason)
            self.queue.close()

    def _log(self, message: str) -> None:
        log.info(
            message,
            extra={
                "endpoint": REALTIME,
                "router": self.router_id,
                "request_id": self.tracked.request_id,
            },
        )

    # ---- the socket ----------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one server event for the writer (the socket is cut on overflow)."""
        if not self.queue.put(jsoncodec.dumps(event), True) and self.queue.overflowed:
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
        elif self.close_with is not None:
            code, reason = self.close_with
            # websockets 13 (under the openai SDK) drops the messages a client has
            # not read yet when the connection ends: let it read the last events first
            await asyncio.sleep(CLOSE_LINGER)
            await self.ws.close(code=code, message=reason.encode())

    def _on_event(self, event: ConversationEvent) -> None:
        self.bridge.on_event(event)
        self._settle()

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
        """Serve the socket until the client leaves, the conversation fails or the
        server ends the session."""
        writer = asyncio.create_task(self._writer())
        subscription = self.inputs.pipe(converse(self.parts, self.conversation)).subscribe(
            self._on_event, self._on_error, scheduler=self.scheduler
        )
        outcome = ABORTED
        try:
            self.bridge.start()
            self._settle()
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
            self._count_close()
            self.closed.set()

    def _count_close(self) -> None:
        """`sluice_socket_closes_total{endpoint="realtime", reason}`: why it closed."""
        metrics = self.telemetry.metrics
        if metrics is None:
            return
        if self.queue.overflowed:
            reason = "slow_consumer"
        elif self.close_with is not None:
            reason = "restart" if self.close_with[0] == RESTART else "draining"
        elif self.failed:
            reason = "error"
        else:
            reason = "client"
        metrics.socket_closes.labels(REALTIME, reason).inc()

    def _on_text(self, text: str) -> None:
        try:
            event = parse_client_event(text)
        except Problem as problem:
            self.bridge.fail(problem)
            return
        self.bridge.on_client_event(event)
        self._settle()
