"""The converse websocket (`GET /v1/agent/{router}/converse`): a voice conversation.

Per request (one conversation), a composition of (see docs/pipelines.md):

    inbound ─► per_request(request_id) ─► validate `converse` (protocol.converse)
      ─► request_frames (cancel, the terminal rule)
         ─► converse_intake (decode audio to 16 kHz, messages -> inputs, notices)
            ├─► inputs ─► converse (pipelines.conversation: hear, ChatRouter.stream,
            │     speak_text, turn-taking, barge-in) ─► event_frame
            └─► notices
         ─► then_emit(`done`) ─► merge ─► the socket writer

The protocol (messages, frames, decisions) is in docs/conversations.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import reactivex
from pydantic import ValidationError
from reactivex import Observable
from reactivex import operators as ops

from audio.pcm import AudioFormatError, open_decoder
from audio.sentences import TextPiece
from config.models import AgentRouterConfig
from observability.telemetry import RequestTelemetry
from operators.audio_intake import PIPELINE_RATE
from operators.converse_intake import (
    IntakeItem,
    before_end,
    converse_intake,
    is_input,
    is_notice,
)
from operators.ordered import merge_now, then_emit
from operators.per_request import per_request
from operators.vad import resolve_vad
from pipelines.chat_router import ChatRouter
from pipelines.common import Admission, describe_validation_error, request_frames
from pipelines.conversation import converse
from pipelines.conversation_types import (
    ConversationEvent,
    ConversationInput,
    ConversationParts,
    ConversationSettings,
    ConversationStats,
)
from pipelines.endpoint import Pipeline
from pipelines.listen_router import ListenRouter
from pipelines.speak_router import SpeakRouter
from pipelines.speech_in import hear
from pipelines.speech_out import Spoken, speak_text
from protocol.converse import CONVERSE, LATER_TYPES, ConverseErrorName, ConverseRequestIn
from protocol.converse_frames import done_frame, error_frame, event_frame
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.messages import ClientMessage, Inbound
from protocol.speak import Voice

CONVERSE_ENDPOINT = "converse"


@dataclass(frozen=True)
class AgentStages:
    """An agent router's config and the three routers it composes."""

    config: AgentRouterConfig
    listen: ListenRouter
    chat: ChatRouter
    speak: SpeakRouter


def resolve_stages(
    agent: AgentRouterConfig,
    chat_routers: Mapping[str, ChatRouter],
    speech: Mapping[str, Mapping[str, object]],
) -> AgentStages | str:
    """An agent's config and the gateway's routers in; its stages, or why not, out."""
    chat = chat_routers.get(agent.chat)
    listen = getattr(speech.get(agent.listen, {}).get("listen"), "router", None)
    speak = getattr(speech.get(agent.speak, {}).get("speak"), "router", None)
    if chat is None:
        return f"agent router {agent.id!r}: language router {agent.chat!r} is not served"
    if not isinstance(listen, ListenRouter):
        return f"agent router {agent.id!r}: speech router {agent.listen!r} serves no listen"
    if not isinstance(speak, SpeakRouter):
        return f"agent router {agent.id!r}: speech router {agent.speak!r} serves no speak"
    return AgentStages(agent, listen, chat, speak)


def _refuse_first(frames: FrameFactory, first: ClientMessage) -> Frame | None:
    if first.type in LATER_TYPES:
        return frames.error(
            ConverseErrorName.UNKNOWN_REQUEST,
            f"no conversation {first.request_id!r} is running: send 'converse' first "
            f"(this {first.type!r} was ignored)",
            finish_reason=None,
        )
    if first.type != CONVERSE:
        return frames.error(
            ErrorName.UNSUPPORTED_MESSAGE_TYPE,
            f"converse starts with a 'converse' message, not {first.type!r}",
        )
    return None


def conversation_parts(
    stages: AgentStages,
    request: ConverseRequestIn,
    request_id: str,
    output_rate: int,
    clock: Callable[[], float],
    telemetry: RequestTelemetry | None,
) -> ConversationParts:
    """The routers of an agent, curried for one conversation's request."""
    turn = stages.config.turn
    language = request.language or turn.language
    interim = (
        request.interim_results if request.interim_results is not None else turn.interim_results
    )
    vad = resolve_vad(stages.listen.section.vad, None)
    listen, chat, speak = stages.listen, stages.chat, stages.speak

    def speaker(voice: str | None) -> Callable[[Observable[TextPiece]], Observable[Spoken]]:
        chosen: Voice = voice
        return speak_text(speak, chosen, output_rate, request_id, telemetry)

    return ConversationParts(
        hear=hear(listen, vad, language, interim, telemetry, clock),
        transcribe=lambda segment: listen.transcribe(segment, language, False, telemetry),
        chat=lambda chat_request: chat.stream(
            chat_request, telemetry=telemetry, whole_tool_calls=True
        ),
        speak=speaker,
        provider_id=speak.provider_id,
        output_rate=output_rate,
        clock=clock,
    )


def converse_request(
    stages: AgentStages,
    first: ClientMessage,
    later: Observable[ClientMessage],
    clock: Callable[[], float],
    telemetry: RequestTelemetry | None = None,
) -> Observable[Frame]:
    """One conversation: its first message and later ones in, its frames out."""
    agent = stages.config
    frames = FrameFactory(first.request_id, agent.id, first.metadata, clock)
    refusal = _refuse_first(frames, first)
    if refusal is not None:
        return reactivex.of(refusal)
    try:
        request = ConverseRequestIn.model_validate(first.body)
    except ValidationError as error:
        return reactivex.of(
            frames.error(ErrorName.PAYLOAD_PARSE_ERROR, describe_validation_error(error))
        )
    try:
        decoder = open_decoder(request.input_format(), PIPELINE_RATE)
    except AudioFormatError as error:
        return reactivex.of(frames.error(error.name, str(error)))
    output_rate = request.output_format.sample_rate or stages.speak.section.format.sample_rate
    parts = conversation_parts(stages, request, first.request_id, output_rate, clock, telemetry)
    turn_detection = request.turn_detection
    settings = ConversationSettings(
        instructions=request.instructions or agent.instructions,
        voice=request.voice or agent.voice,
        max_history=agent.turn.max_history_messages,
        turn_detection=agent.turn.turn_detection if turn_detection is None else turn_detection,
        tools=request.tool_dicts() or (),
        tool_choice=request.tool_choice_value(),
    )

    def answer_for(inputs: Observable[ClientMessage]) -> Observable[Frame]:
        stats = ConversationStats()

        def body(items: Observable[IntakeItem]) -> Observable[Frame]:
            conversation_inputs = cast(
                Observable[ConversationInput],
                items.pipe(ops.take_while(before_end), ops.filter(is_input)),
            )

            def to_frame(event: ConversationEvent) -> Frame | None:
                return event_frame(frames, event)

            talk = cast(
                Observable[Frame],
                conversation_inputs.pipe(
                    converse(parts, settings, stats), ops.map(to_frame), ops.filter(_is_frame)
                ),
            )

            def with_notices(main: Observable[Frame]) -> Observable[Frame]:
                notices = cast(Observable[Frame], items.pipe(ops.filter(is_notice)))
                return merge_now(main, notices.pipe(ops.take_until(main.pipe(ops.count()))))

            return talk.pipe(ops.publish(with_notices))

        def closing() -> Frame:
            return done_frame(frames, stats, output_rate)

        intake = inputs.pipe(converse_intake(decoder, frames))
        return intake.pipe(ops.publish(body), then_emit(closing))

    return request_frames(frames, answer_for, later, lambda error: error_frame(frames, error))


def _is_frame(frame: Frame | None) -> bool:
    return frame is not None


Resolve = Callable[[], AgentStages | str]
"""The agent's stages as the gateway holds them now (a reload may change them), or why not."""


def converse_pipeline(
    router_id: str, resolve: Resolve, clock: Callable[[], float], admission: Admission
) -> Pipeline:
    """The whole converse socket: inbound messages in, merged frames out.

    Each new conversation resolves the agent's routers when it starts, so a config
    reload applies to the conversations that start after it.
    """

    def start(first: ClientMessage, later: Observable[ClientMessage]) -> Observable[Frame]:
        stages = resolve()
        if isinstance(stages, str):
            frames = FrameFactory(first.request_id, router_id, first.metadata, clock)
            return reactivex.of(frames.error(ErrorName.ROUTER_NOT_FOUND, stages))
        telemetry = admission.request_telemetry(first.request_id)
        return converse_request(stages, first, later, clock, telemetry)

    def pipeline(inbound: Observable[Inbound]) -> Observable[Frame]:
        return inbound.pipe(
            per_request(
                start,
                bad_message=admission.bad_message_frame(router_id, clock),
                admit=admission.admit_frame(router_id, clock),
                crashed=admission.crashed_frame(router_id, clock),
                on_active_change=admission.on_active_change,
            )
        )

    return pipeline
