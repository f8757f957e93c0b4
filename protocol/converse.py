"""The converse endpoint's client messages: `converse` starts a conversation; audio,
`text`, `played`, `commit`, `clear`, `respond`, `interrupt`, `update`, `tool_result` and
`end` follow.

A `converse` message's JSON body flows in as `ConverseRequestIn`; a later
message's body flows in as the matching model below, or a `ValidationError`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from audio.pcm import InputFormat
from protocol.chat import ToolChoiceIn, ToolIn
from protocol.listen import ListenFormatIn

CONVERSE = "converse"
AUDIO = "audio"
TEXT = "text"
PLAYED = "played"
COMMIT = "commit"
CLEAR = "clear"
RESPOND = "respond"
INTERRUPT = "interrupt"
UPDATE = "update"
TOOL_RESULT = "tool_result"
END = "end"

LATER_TYPES = (AUDIO, TEXT, PLAYED, COMMIT, CLEAR, RESPOND, INTERRUPT, UPDATE, TOOL_RESULT, END)
"""Message types a running conversation takes (besides `cancel`)."""


class ConverseErrorName:
    """Error names of the converse endpoint beyond `protocol.frames.ErrorName`."""

    UNSUPPORTED_FORMAT = "unsupported_format"
    INVALID_AUDIO = "invalid_audio"
    UNKNOWN_REQUEST = "unknown_request"
    AUDIO_AFTER_END = "audio_after_end"


class OutputFormatIn(BaseModel):
    """`output_format` of a `converse` message: the reply audio (raw PCM16 mono)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoding: Literal["pcm_s16le"] = "pcm_s16le"
    sample_rate: int | None = Field(default=None, ge=8000, le=48000)


ToolChoiceField = Literal["auto", "none", "required"] | ToolChoiceIn | None


class ToolsMixin(BaseModel):
    """`tools` and `tool_choice` (OpenAI's chat shapes), passed to the chat router."""

    tools: list[ToolIn] | None = Field(
        default=None, max_length=128, description="Functions the model may call."
    )
    tool_choice: ToolChoiceField = Field(
        default=None, description="`auto`, `none`, `required`, or one function."
    )

    def tool_dicts(self) -> tuple[dict[str, Any], ...] | None:
        """`tools` as plain JSON objects (None: not given)."""
        if self.tools is None:
            return None
        return tuple(tool.model_dump(exclude_none=True) for tool in self.tools)

    def tool_choice_value(self) -> str | dict[str, Any] | None:
        """`tool_choice` as plain JSON (None: not given)."""
        choice = self.tool_choice
        return choice.model_dump() if isinstance(choice, ToolChoiceIn) else choice


class ConverseRequestIn(ToolsMixin):
    """The body of a `converse` message (envelope fields are ignored here)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: ListenFormatIn
    output_format: OutputFormatIn = Field(default_factory=OutputFormatIn)
    instructions: str | None = Field(default=None, max_length=20_000)
    voice: str | None = Field(default=None, min_length=1, max_length=128)
    turn_detection: bool | None = None
    language: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}$"
    )
    interim_results: bool | None = None

    def input_format(self) -> InputFormat:
        """The declared input format for `audio.pcm.open_decoder`."""
        return InputFormat(self.format.encoding, self.format.sample_rate, self.format.channels)


class NoBodyIn(BaseModel):
    """`commit`, `clear` and `interrupt` carry nothing beyond the envelope."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class TextIn(BaseModel):
    """`{"type": "text", "text", "respond"?}`: a typed user message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    text: str = Field(min_length=1, max_length=20_000)
    respond: bool = True


class PlayedIn(BaseModel):
    """`{"type": "played", "ms"}`: reply audio played so far (ms of the reply audio)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ms: int = Field(ge=0)


class RespondIn(BaseModel):
    """`{"type": "respond", "instructions"?}`: reply now to the history."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    instructions: str | None = Field(default=None, max_length=20_000)


class UpdateIn(ToolsMixin):
    """`{"type": "update", "instructions"?, "voice"?, "turn_detection"?, "tools"?,
    "tool_choice"?}`: later turns' settings (`tools: []` removes the tools)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    instructions: str | None = Field(default=None, max_length=20_000)
    voice: str | None = Field(default=None, min_length=1, max_length=128)
    turn_detection: bool | None = None


class ToolResultIn(BaseModel):
    """`{"type": "tool_result", "call_id", "output", "respond"?}`: a tool call's result."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    call_id: str = Field(min_length=1, max_length=256)
    output: str = Field(max_length=200_000)
    respond: bool = True
