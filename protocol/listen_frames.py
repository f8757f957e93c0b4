"""The listen endpoint's server frames: VAD boundaries, transcripts, the terminal frame.

`speech_started {segment_id, start_ms}` / `speech_ended {segment_id, end_ms}`,
`transcript {segment_id, text, is_final, start_ms, end_ms, provider_id,
model_id}`, a non-terminal `model_unavailable` for a failover inside a segment,
then `done {usage}` (or a terminal error). Each builder takes the request's
`FrameFactory` and what happened, and returns one `Frame`.
"""

from __future__ import annotations

import logging

from operators.audio_intake import IntakeState
from operators.failover import AllModelsUnavailable, Reset
from operators.vad import SpeechEnded, SpeechStarted
from pipelines.listen_router import SegmentTranscript
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.listen import ListenError
from providers.types import ErrorCategory, ProviderError

log = logging.getLogger("sluice.listen")


def boundary_frame(frames: FrameFactory, event: SpeechStarted | SpeechEnded) -> Frame:
    """`speech_started` / `speech_ended` for a VAD event."""
    if isinstance(event, SpeechStarted):
        return frames.event("speech_started", segment_id=event.segment_id, start_ms=event.start_ms)
    return frames.event("speech_ended", segment_id=event.segment_id, end_ms=event.end_ms)


def transcript_frame(
    frames: FrameFactory, item: SegmentTranscript | Reset, segment_id: int
) -> Frame:
    """A `transcript` frame, or the non-terminal `model_unavailable` for a Reset."""
    if isinstance(item, Reset):
        return frames.error(
            ErrorName.MODEL_UNAVAILABLE,
            f"model {item.model_id!r} failed while transcribing segment {segment_id} "
            f"({item.error}); the segment's audio after its last final result is replayed "
            "to the next model",
            finish_reason=None,
            model_id=item.model_id,
            segment_id=segment_id,
        )
    return frames.event(
        "transcript",
        segment_id=item.segment_id,
        text=item.text,
        is_final=item.is_final,
        start_ms=item.start_ms,
        end_ms=item.end_ms,
        provider_id=item.model.provider_id,
        model_id=item.model.model_id,
    )


def terminal_frame(frames: FrameFactory, state: IntakeState, max_audio_seconds: float) -> Frame:
    """`done` (finish_reason complete) with usage, or `audio_too_long` at the limit."""
    usage = {"audio_ms": state.audio_ms(), "segments": state.segments}
    if state.limit_hit:
        return frames.error(
            ErrorName.AUDIO_TOO_LONG,
            f"the request passed max_audio_seconds ({max_audio_seconds:g}s); the audio up to "
            "the limit was transcribed, the rest was ignored",
            limit="max_audio_seconds",
            usage=usage,
        )
    done = frames.event("done", finish_reason="complete", usage=usage)
    return Frame(done.request_id, done.data, terminal=True)


def error_frame(frames: FrameFactory, router_id: str, error: Exception) -> Frame:
    """The terminal frame for a request whose pipeline failed."""
    if isinstance(error, ListenError):
        return frames.error(error.name, error.message)
    if isinstance(error, AllModelsUnavailable):
        log.warning(
            "all listen models unavailable",
            extra={"request_id": frames.request_id, "router": router_id, "cause": str(error)},
        )
        return frames.error(ErrorName.ALL_MODELS_UNAVAILABLE, str(error))
    if isinstance(error, ProviderError) and error.category is ErrorCategory.BAD_REQUEST:
        return frames.error(ErrorName.BAD_REQUEST, f"the provider rejected the request: {error}")
    log.error(
        "listen request failed",
        exc_info=error,
        extra={"request_id": frames.request_id, "router": router_id},
    )
    return frames.error(ErrorName.UNKNOWN_ERROR, f"internal error: {type(error).__name__}")
