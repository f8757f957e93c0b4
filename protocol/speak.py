"""The speak endpoint's client messages: `speak` starts a request, `text` adds to it.

A `speak` message's JSON body + the router's `speak` section flow in;
`parse_speak` gives a `SpeakSpec` (format filled from the router's defaults,
checked against what the encoder can do) or a `Refusal` (an error name and
message for one typed error frame). `TextRequestIn` is the body of a later
`text` message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from audio.encode import check_format
from config.models import AudioEncoding, AudioFormat, SpeakSection
from protocol.frames import ErrorName
from protocol.validation import describe_validation_error

SPEAK = "speak"
TEXT = "text"

UNSUPPORTED_FORMAT = "unsupported_format"
REQUEST_NOT_FOUND = "request_not_found"

Voice = str | dict[str, str] | None
"""One voice for every model, or voices keyed by model id or provider key."""


@dataclass(frozen=True, slots=True)
class SpeakSpec:
    """A validated `speak` message."""

    format: AudioFormat
    voice: Voice
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a `speak` message was refused: an error name and a message."""

    name: str
    message: str
    limit: str | None = None
    """The config key of the limit that refused it (e.g. "max_text_chars")."""


class SpeakFormatIn(BaseModel):
    """`format` of a `speak` message: any field left out takes the router's `speak.format`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoding: AudioEncoding | None = None
    sample_rate: int | None = Field(default=None, ge=8000, le=48000)
    channels: int | None = Field(default=None, ge=1, le=2)


class SpeakRequestIn(BaseModel):
    """The body of a `speak` message (envelope fields are ignored here).

    `voice` is one voice for every model, or voices keyed by model id or provider key.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    text: StrictStr | None = None
    voice: StrictStr | dict[str, StrictStr] | None = None
    format: SpeakFormatIn | None = None
    final: StrictBool = False


class TextRequestIn(BaseModel):
    """The body of a `text` message: more text for a `speak` request in flight."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    text: StrictStr = ""
    final: StrictBool = False


_FIELD_REFUSALS = {
    "text": "text must be a string",
    "final": "final must be true or false",
    "voice": "voice must be a string or an object of strings keyed by model id or provider",
}


def _refusal(error: ValidationError) -> Refusal:
    """The refusal for the first bad field, in the order text, final, voice, format."""
    bad = {str(e["loc"][0]) for e in error.errors(include_url=False) if e["loc"]}
    for field, message in _FIELD_REFUSALS.items():
        if field in bad:
            return Refusal(ErrorName.INVALID_REQUEST, message)
    return Refusal(UNSUPPORTED_FORMAT, describe_validation_error(error))


def parse_speak(body: Mapping[str, Any], section: SpeakSection) -> SpeakSpec | Refusal:
    """A `speak` message's JSON body -> its spec, or the reason it is refused."""
    try:
        request = SpeakRequestIn.model_validate(body)
        given = request.format.model_dump(exclude_none=True) if request.format else {}
        fmt = AudioFormat.model_validate({**section.format.model_dump(), **given})
    except ValidationError as error:
        return _refusal(error)
    problem = check_format(fmt.encoding, fmt.sample_rate, fmt.channels)
    if problem is not None:
        return Refusal(UNSUPPORTED_FORMAT, problem)
    final, voice, text = request.final, request.voice, request.text or ""
    if final and not text.strip():
        return Refusal(ErrorName.INVALID_REQUEST, "final is true but there is no text to speak")
    if len(text) > section.max_text_chars:
        return Refusal(
            ErrorName.TEXT_TOO_LONG,
            f"text has {len(text)} characters; the limit is {section.max_text_chars}",
            limit="max_text_chars",
        )
    return SpeakSpec(fmt, voice, text, final)
