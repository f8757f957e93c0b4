"""The listen endpoint's client messages: `listen` starts a request; audio and `end` follow.

A `listen` message's JSON body flows in as `ListenRequestIn` (its `format`
becomes the decoder's `InputFormat`); `ListenError` is a request-ending problem
with the client's audio whose `name` goes on the wire.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from audio.pcm import InputFormat

LISTEN = "listen"
AUDIO = "audio"
END = "end"
AUDIO_OFFSET = "audio_offset"
"""`{"type": "audio_offset", "request_id", "offset"}`: the audio that follows starts at
byte `offset` of the request's audio (a client sending its tail again after a resume;
bytes the request already has are skipped)."""


class ListenErrorName:
    """Error names of the listen endpoint beyond `protocol.frames.ErrorName`."""

    UNSUPPORTED_FORMAT = "unsupported_format"
    INVALID_AUDIO = "invalid_audio"
    FORMAT_CHANGED = "format_changed"
    UNKNOWN_REQUEST = "unknown_request"
    AUDIO_AFTER_END = "audio_after_end"


class ListenError(Exception):
    """A request-ending problem with the client's audio; `name` goes on the wire."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class ListenFormatIn(BaseModel):
    """`format` of a `listen` message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoding: str = "pcm_s16le"
    sample_rate: int | None = Field(default=None, ge=1)
    channels: int | None = Field(default=None, ge=1)


class ListenRequestIn(BaseModel):
    """The body of a `listen` message (envelope fields are ignored here)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: ListenFormatIn
    language: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}$"
    )
    interim_results: bool = False
    vad: dict[str, Any] | None = None

    def input_format(self) -> InputFormat:
        """The declared format for `audio.pcm.open_decoder`."""
        return InputFormat(self.format.encoding, self.format.sample_rate, self.format.channels)
