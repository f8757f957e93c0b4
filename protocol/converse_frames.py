"""Frames of the converse endpoint: a conversation event in, one frame (or none) out.

Reply audio goes out as binary frames of raw PCM16 mono at the conversation's
output rate; everything else is a JSON frame in the shared envelope (DESIGN
section 3). `docs/conversations.md` lists every frame.
"""

from __future__ import annotations

import logging

from operators.failover import AllModelsUnavailable
from operators.vad import SpeechEnded, SpeechStarted
from pipelines.chat_router import MissingCapability
from pipelines.conversation_types import (
    ChatRestarted,
    ConversationEvent,
    ConversationStats,
    Notice,
    ReplyAudio,
    ReplyAudioDropped,
    ReplyInterrupted,
    ReplySegment,
    ReplySentence,
    ReplyStarted,
    ReplyText,
    ReplyToolCalls,
    TurnEnded,
    UserTurn,
)
from pipelines.speech_in import Transcribed
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.listen import ListenError
from protocol.listen_frames import boundary_frame, transcript_frame
from providers.types import ErrorCategory, ProviderError

log = logging.getLogger("sluice.converse")

SAMPLE_BYTES = 2


def event_frame(frames: FrameFactory, event: ConversationEvent) -> Frame | None:
    """One conversation event -> its frame (None: the event has no frame of its own)."""
    if isinstance(event, ReplyAudio):
        assert frames.request_id is not None
        return Frame(frames.request_id, event.samples.astype("<i2").tobytes())
    if isinstance(event, SpeechStarted | SpeechEnded):
        return boundary_frame(frames, event)
    if isinstance(event, Transcribed):
        return transcript_frame(frames, event.item, event.segment_id)
    if isinstance(event, ReplyText):
        return frames.event(
            "reply_text",
            turn_id=event.turn_id,
            delta=event.delta,
            model_id=event.model.model_id,
            provider_id=event.model.provider_id,
        )
    if isinstance(event, ReplySegment):
        sentence = event.sentence
        return frames.event(
            "segment",
            turn_id=event.turn_id,
            start_ms=event.start_ms,
            segment={
                "segment_id": sentence.index,
                "text": sentence.text,
                "start_char": sentence.start_char,
                "end_char": sentence.end_char,
                "provider_id": event.provider_id,
                "model_id": event.model_id,
                "audio_ms": event.audio_ms,
                "audio_bytes": event.samples * SAMPLE_BYTES,
            },
        )
    if isinstance(event, ReplyToolCalls):
        return frames.event(
            "tool_calls",
            turn_id=event.turn_id,
            calls=[call.to_json() for call in event.calls],
            model_id=event.model.model_id,
            provider_id=event.model.provider_id,
        )
    if isinstance(event, ReplySentence):
        return None
    return _turn_frame(frames, event)


def _turn_frame(frames: FrameFactory, event: ConversationEvent) -> Frame | None:
    if isinstance(event, UserTurn):
        return frames.event("user_turn", turn_id=event.turn_id, text=event.text)
    if isinstance(event, ReplyStarted):
        return frames.event("reply_started", turn_id=event.turn_id)
    if isinstance(event, ReplyInterrupted):
        return frames.event(
            "reply_interrupted",
            turn_id=event.turn_id,
            reason=event.reason,
            kept_ms=event.kept_ms,
            sent_ms=event.sent_ms,
            kept_bytes=event.kept_samples * SAMPLE_BYTES,
            sent_bytes=event.sent_samples * SAMPLE_BYTES,
            text=event.text,
        )
    if isinstance(event, TurnEnded):
        fields: dict[str, object] = {
            "turn_id": event.turn_id,
            "reason": event.reason,
            "user_text": event.user_text,
            "reply_text": event.reply_text,
        }
        if event.error is not None:
            name, message = describe_error(frames, event.error)
            fields["error"] = {"name": name, "message": message}
        return frames.event("turn_ended", **fields)
    if isinstance(event, ChatRestarted):
        return frames.error(
            ErrorName.MODEL_UNAVAILABLE,
            f"chat model {event.model_id!r} failed mid-answer; the reply goes on from the "
            "next model (the text already sent is kept)",
            finish_reason=None,
            stage="chat",
            turn_id=event.turn_id,
            model_id=event.model_id,
        )
    if isinstance(event, ReplyAudioDropped):
        return frames.error(
            ErrorName.MODEL_UNAVAILABLE,
            f"speak model {event.model_id!r} failed inside a sentence ({event.error}); drop "
            "the last drop_bytes of reply audio, the sentence is spoken again by the next model",
            finish_reason=None,
            stage="speak",
            turn_id=event.turn_id,
            model_id=event.model_id,
            drop_bytes=event.samples * SAMPLE_BYTES,
        )
    if isinstance(event, Notice):
        return frames.error(event.name, event.message, finish_reason=None)
    return None


def describe_error(frames: FrameFactory, error: BaseException) -> tuple[str, str]:
    """An error of a conversation stage -> its wire name and message (logged when unexpected)."""
    if isinstance(error, ListenError):
        return error.name, error.message
    if isinstance(error, AllModelsUnavailable):
        log.warning(
            "all models unavailable",
            extra={
                "request_id": frames.request_id,
                "router": frames.router_id,
                "cause": str(error),
            },
        )
        return ErrorName.ALL_MODELS_UNAVAILABLE, str(error)
    if isinstance(error, MissingCapability):
        return ErrorName.UNSUPPORTED_CAPABILITY, str(error)
    if isinstance(error, ProviderError) and error.category is ErrorCategory.BAD_REQUEST:
        return ErrorName.BAD_REQUEST, f"the provider rejected the request: {error}"
    log.error(
        "conversation stage failed",
        exc_info=error,
        extra={"request_id": frames.request_id, "router": frames.router_id},
    )
    return ErrorName.UNKNOWN_ERROR, f"internal error: {type(error).__name__}"


def error_frame(frames: FrameFactory, error: Exception) -> Frame:
    """The terminal frame of a conversation whose pipeline failed."""
    name, message = describe_error(frames, error)
    return frames.error(name, message)


def done_frame(frames: FrameFactory, stats: ConversationStats, output_rate: int) -> Frame:
    """`done` (finish_reason complete) with the conversation's usage."""
    usage = {
        "turns": stats.turns,
        "audio_in_ms": stats.audio_in_samples * 1000 // 16000,
        "audio_out_ms": stats.audio_out_samples * 1000 // output_rate,
    }
    done = frames.event("done", finish_reason="complete", usage=usage)
    return Frame(done.request_id, done.data, terminal=True)
