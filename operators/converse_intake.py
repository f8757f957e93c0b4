"""A conversation's later client messages -> conversation inputs and notice frames.

    msgs:   -a-t-p-a-x-e-a-|     (a: audio, t: text, p: played, x: unknown, e: end)
    result: -A-T-P-A-n-E-n-|     (A: UserAudio at 16 kHz, n: notice frame, E: EndOfInput)

Binary audio is decoded to PCM16 mono at `PIPELINE_RATE`; each JSON message type
becomes its `pipelines.conversation_types` input. Bad messages become non-terminal
notice frames; undecodable audio errors with `ListenError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from reactivex import Observable, abc

from audio.pcm import AudioDecoder, AudioFormatError
from pipelines.conversation_types import (
    CancelResponse,
    ClearAudio,
    CommitAudio,
    Configure,
    ConversationInput,
    CreateResponse,
    Played,
    ToolResult,
    UserAudio,
    UserText,
)
from protocol.converse import (
    AUDIO,
    CLEAR,
    COMMIT,
    CONVERSE,
    END,
    INTERRUPT,
    PLAYED,
    RESPOND,
    TEXT,
    TOOL_RESULT,
    UPDATE,
    ConverseErrorName,
    PlayedIn,
    RespondIn,
    TextIn,
    ToolResultIn,
    UpdateIn,
)
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.listen import ListenError
from protocol.messages import ClientMessage
from protocol.validation import describe_validation_error


@dataclass(frozen=True, slots=True)
class EndOfInput:
    """The client sent `end`: the conversation's input is over."""


IntakeItem = ConversationInput | Frame | EndOfInput


def _parse(model: type[BaseModel], msg: ClientMessage) -> Any:
    return model.model_validate(msg.body)


def _played(msg: ClientMessage) -> ConversationInput:
    return Played(_parse(PlayedIn, msg).ms)


def _text(msg: ClientMessage) -> ConversationInput:
    body = _parse(TextIn, msg)
    return UserText(body.text, body.respond)


def _respond(msg: ClientMessage) -> ConversationInput:
    return CreateResponse(_parse(RespondIn, msg).instructions)


def _update(msg: ClientMessage) -> ConversationInput:
    body = _parse(UpdateIn, msg)
    return Configure(
        body.instructions,
        body.voice,
        body.turn_detection,
        body.tool_dicts(),
        body.tool_choice_value(),
    )


def _tool_result(msg: ClientMessage) -> ConversationInput:
    body = _parse(ToolResultIn, msg)
    return ToolResult(body.call_id, body.output, body.respond)


_INPUTS: dict[str, Callable[[ClientMessage], ConversationInput]] = {
    TEXT: _text,
    PLAYED: _played,
    COMMIT: lambda _msg: CommitAudio(),
    CLEAR: lambda _msg: ClearAudio(),
    RESPOND: _respond,
    INTERRUPT: lambda _msg: CancelResponse(),
    UPDATE: _update,
    TOOL_RESULT: _tool_result,
}


def converse_intake(
    decoder: AudioDecoder, frames: FrameFactory
) -> Callable[[Observable[ClientMessage]], Observable[IntakeItem]]:
    """A conversation's later messages in; its inputs, notices and `EndOfInput` out (module doc)."""

    def operator(source: Observable[ClientMessage]) -> Observable[IntakeItem]:
        def subscribe(
            observer: abc.ObserverBase[IntakeItem], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            state = {"ended": False, "late": False, "failed": False}

            def notice(name: str, message: str) -> None:
                observer.on_next(frames.error(name, message, finish_reason=None))

            def audio(pcm: bytes) -> None:
                if pcm:
                    observer.on_next(UserAudio(pcm))

            def handle(msg: ClientMessage) -> None:
                if state["ended"]:
                    if not state["late"]:
                        state["late"] = True
                        notice(
                            ConverseErrorName.AUDIO_AFTER_END,
                            "input after the conversation's `end` is ignored",
                        )
                    return
                if msg.type == AUDIO:
                    audio(decoder.push(msg.audio or b""))
                elif msg.type == END:
                    state["ended"] = True
                    audio(decoder.flush())
                    observer.on_next(EndOfInput())
                elif msg.type in _INPUTS:
                    try:
                        observer.on_next(_INPUTS[msg.type](msg))
                    except ValidationError as error:
                        notice(ErrorName.INVALID_REQUEST, describe_validation_error(error))
                elif msg.type == CONVERSE:
                    notice(
                        ErrorName.DUPLICATE_REQUEST_ID,
                        f"conversation {msg.request_id!r} is already running; this 'converse' "
                        "was ignored (use a new request_id)",
                    )
                else:
                    notice(
                        ErrorName.UNSUPPORTED_MESSAGE_TYPE,
                        "a conversation takes binary audio and 'text', 'played', 'commit', "
                        "'clear', 'respond', 'interrupt', 'update', 'tool_result', 'end' and "
                        "'cancel', "
                        f"not {msg.type!r}",
                    )

            def on_next(msg: ClientMessage) -> None:
                if state["failed"]:
                    return
                try:
                    handle(msg)
                except AudioFormatError as error:
                    state["failed"] = True
                    observer.on_error(ListenError(error.name, str(error)))

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator


def is_input(item: IntakeItem) -> bool:
    """Whether an intake item is a conversation input."""
    return not isinstance(item, Frame | EndOfInput)


def before_end(item: IntakeItem) -> bool:
    """Whether an intake item comes before `EndOfInput`."""
    return not isinstance(item, EndOfInput)


def is_notice(item: IntakeItem) -> bool:
    """Whether an intake item is a notice frame."""
    return isinstance(item, Frame)
