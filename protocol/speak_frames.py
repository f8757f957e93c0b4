"""The speak endpoint's server frames: segment events, failover notices, the terminal frame.

Each builder takes the request's `FrameFactory` and what happened, and returns one
`Frame`: `segment {segment_id, text, start_char, end_char, provider_id, model_id,
audio_ms, audio_bytes}` after a sentence's audio; a non-terminal
`model_unavailable {segment_id, model_id, drop_bytes}` when a model failed inside
one; `done {usage, time_to_first_audio_ms, segments}` (terminal) at the end, or a
terminal error for a failed request. Audio itself goes out as binary frames.
"""

from __future__ import annotations

import logging

from audio.sentences import Sentence
from operators.failover import AllModelsUnavailable, Reset
from protocol.frames import ErrorName, Frame, FrameFactory
from providers.types import ErrorCategory, ProviderError

log = logging.getLogger("sluice.speak")


def model_unavailable_frame(
    frames: FrameFactory, reset: Reset, segment_id: int, drop_bytes: int
) -> Frame:
    """The non-terminal notice that `reset.model_id` failed inside segment `segment_id`."""
    return frames.error(
        ErrorName.MODEL_UNAVAILABLE,
        f"model {reset.model_id!r} failed inside segment {segment_id} "
        f"({reset.error}); drop the last {drop_bytes} audio bytes, this "
        "sentence and the rest are synthesized by the next model",
        finish_reason=None,
        model_id=reset.model_id,
        segment_id=segment_id,
        drop_bytes=drop_bytes,
    )


def segment_frame(
    frames: FrameFactory,
    sentence: Sentence,
    provider_id: str | None,
    model_id: str | None,
    audio_ms: int,
    audio_bytes: int,
) -> Frame:
    """The `segment` event that follows the audio of `sentence`."""
    return frames.event(
        "segment",
        segment={
            "segment_id": sentence.index,
            "text": sentence.text,
            "start_char": sentence.start_char,
            "end_char": sentence.end_char,
            "provider_id": provider_id,
            "model_id": model_id,
            "audio_ms": audio_ms,
            "audio_bytes": audio_bytes,
        },
    )


def done_frame(
    frames: FrameFactory,
    characters: int,
    audio_ms: int,
    time_to_first_audio_ms: float | None,
    segments: int,
) -> Frame:
    """The terminal `done` of a request whose every segment was spoken."""
    done = frames.event(
        "done",
        finish_reason="complete",
        usage={"characters": characters, "audio_ms": audio_ms},
        time_to_first_audio_ms=time_to_first_audio_ms,
        segments=segments,
    )
    return Frame(done.request_id, done.data, terminal=True)


def speak_error_frame(frames: FrameFactory, router_id: str, error: Exception) -> Frame:
    """The terminal frame for a speak request whose synthesis failed."""
    if isinstance(error, AllModelsUnavailable):
        log.warning(
            "all speak models unavailable",
            extra={"request_id": frames.request_id, "router": router_id, "cause": str(error)},
        )
        return frames.error(ErrorName.ALL_MODELS_UNAVAILABLE, str(error))
    if isinstance(error, ProviderError) and error.category is ErrorCategory.BAD_REQUEST:
        return frames.error(ErrorName.BAD_REQUEST, f"the provider rejected the request: {error}")
    log.error(
        "speak request failed",
        exc_info=error,
        extra={"request_id": frames.request_id, "router": router_id},
    )
    return frames.error(ErrorName.UNKNOWN_ERROR, f"internal error: {type(error).__name__}")
