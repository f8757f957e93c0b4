"""Pydantic models of the websocket protocol's envelopes and server frames (DESIGN section 3).

The server builds its frames as dicts (`protocol.frames.FrameFactory`); these models
describe them for the API documents (`apidocs`), and the tests feed real frames
from end-to-end runs through them (`extra="forbid"`), so the documents cannot
drift from what the server sends. Client message bodies are the models the
pipelines validate with (`protocol.chat.ChatRequest`, `protocol.speak.SpeakRequestIn`,
`protocol.listen.ListenRequestIn`); `ClientEnvelope` adds the fields every
client message shares.

    server text frame (dict) -> SERVER_FRAMES[endpoint] -> a validated frame model
    binary frame (bytes)     -> BinaryAudioFrame.from_bytes -> request_id + audio
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from protocol.messages import MAX_REQUEST_ID_CHARS
from providers.types import FinishReason


class ClientEnvelope(BaseModel):
    """What every client text frame carries besides its endpoint's body."""

    model_config = ConfigDict(extra="allow", frozen=True)

    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REQUEST_ID_CHARS,
        description="The request this message belongs to (`id` is accepted as an alias).",
    )
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REQUEST_ID_CHARS,
        description="Alias of `request_id` (what Glide clients send).",
    )
    type: str | None = Field(
        default=None, description="The message type; each endpoint has a default."
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Any JSON object, echoed verbatim on every frame."
    )


class CancelMessage(BaseModel):
    """`{"type": "cancel", "request_id"}`: ends a request on every endpoint."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["cancel"]


class ResumeMessage(BaseModel):
    """`{"type": "resume", "request_id", "after_seq"}`: every frame of a request after
    `after_seq`, then the live rest (docs/resume.md)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["resume"]
    after_seq: int = Field(
        default=0, ge=0, description="The last `seq` the client received (0: none)."
    )


class EndMessage(BaseModel):
    """`{"type": "end", "request_id"}` (listen): the request's audio is over."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["end"]


# ---- server frames ----------------------------------------------------------------


class ServerEnvelope(BaseModel):
    """The envelope of every server text frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    request_id: str | None = Field(
        description="The request; null on an error no request can be tied to."
    )
    id: str | None = Field(description="The same value as `request_id` (for Glide clients).")
    created_at: int = Field(description="Unix seconds.")
    router_id: str
    metadata: dict[str, Any] | None = Field(description="The request's `metadata`, verbatim.")
    seq: int | None = Field(
        default=None,
        ge=1,
        description="The frame's number within its request (1, 2, ...; binary frames "
        "count too). Absent on frames of no request and on errors about a `resume`.",
    )


class ErrorBody(BaseModel):
    """`error` of an error frame; terminal when it carries `finish_reason`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(description="The request id again (Glide's Python client needs it).")
    name: str = Field(description="A typed error name, e.g. `model_unavailable`.")
    message: str
    finish_reason: FinishReason | None = None
    model_id: str | None = Field(default=None, description="`model_unavailable`: the model.")
    segment_id: int | None = Field(
        default=None, description="speak / listen `model_unavailable`: the segment."
    )
    drop_bytes: int | None = Field(
        default=None,
        ge=0,
        description="speak `model_unavailable`: drop this many of the last audio bytes.",
    )
    limit: str | None = Field(default=None, description="The config key of the limit hit.")
    retry_after: float | None = Field(default=None, description="`rate_limited`: seconds.")
    usage: dict[str, Any] | None = Field(
        default=None, description="listen `audio_too_long`: the usage so far."
    )
    stage: Literal["chat", "speak"] | None = Field(
        default=None, description="converse `model_unavailable`: the stage whose model failed."
    )
    turn_id: int | None = Field(default=None, description="converse: the turn.")


class ErrorFrame(ServerEnvelope):
    """`type: "error"` on every endpoint."""

    type: Literal["error"]
    error: ErrorBody


class ToolCallFunctionOut(BaseModel):
    """`function` of a tool call: its name and JSON arguments (a fragment of them
    under `tool_call_streaming: fragments`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    arguments: str


class ToolCallOut(BaseModel):
    """A tool call the model made, in OpenAI's streamed shape. Whole by default;
    under `tool_call_streaming: fragments` only a call's first fragment has `id`,
    `type` and `function.name`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0, description="Which call of the answer (parallel calls).")
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunctionOut


class ChatMessageOut(BaseModel):
    """The message of a chat chunk (content is "" when the chunk only calls tools)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["assistant"]
    content: str
    tool_calls: list[ToolCallOut] | None = Field(
        default=None, description="Sluice's own: tool calls (OpenAI's shape)."
    )


class TokenUsage(BaseModel):
    """Token counts (on the last chunk, when the provider reports them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int
    response_tokens: int
    total_tokens: int


class ModelResponse(BaseModel):
    """`model_response` of a chat chunk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metadata: dict[str, Any]
    message: ChatMessageOut
    finish_reason: FinishReason | None = None
    finish_detail: Literal["tool_calls"] | None = Field(
        default=None,
        description="Sluice's own: why an answer ended with `other` (`tool_calls`: the "
        "model stopped to call tools; Glide's clients accept no such finish_reason).",
    )
    token_usage: TokenUsage | None = None


class SwitchedFrom(BaseModel):
    """Where a continued answer changed models (`mid_stream: continue`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(description="The model that broke mid-stream.")
    provider_id: str = Field(description="Its provider.")
    at_char: int = Field(
        ge=0,
        description="Characters (Unicode code points) of the answer sent before the switch.",
    )


class Chunk(BaseModel):
    """Glide's streamed chat chunk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str
    provider_id: str
    model_name: str
    cached: bool
    model_response: ModelResponse
    finish_reason: FinishReason | None = None
    finish_detail: Literal["tool_calls"] | None = Field(
        default=None, description="Sluice's own: as `model_response.finish_detail`."
    )
    switched_from: SwitchedFrom | None = Field(
        default=None,
        description="Sluice's own, on the first chunk after a model switch in a continued "
        "answer: the chunks before it came from that model, nothing is repeated.",
    )


class ChunkFrame(ServerEnvelope):
    """chatStream: `type: "chunk"`; terminal when the chunk carries `finish_reason`."""

    type: Literal["chunk"]
    chunk: Chunk


class Segment(BaseModel):
    """Which text span the audio just sent covers, and which model made it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segment_id: int = Field(ge=0)
    text: str
    start_char: int = Field(ge=0)
    end_char: int = Field(ge=0)
    provider_id: str | None
    model_id: str | None
    audio_ms: float = Field(ge=0)
    audio_bytes: int = Field(ge=0, description="Audio bytes of this segment (no WAV header).")
    audio_seq: list[int] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="`[first, last]`: the `seq` of the binary frames sent since the "
        "previous segment event (null when none were).",
    )


class SegmentFrame(ServerEnvelope):
    """speak: `type: "segment"`, after the audio of each sentence."""

    type: Literal["segment"]
    segment: Segment


class SpeakUsage(BaseModel):
    """What a speak request used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    characters: int = Field(ge=0)
    audio_ms: float = Field(ge=0)


class SpeakDoneFrame(ServerEnvelope):
    """speak: the terminal `done` frame."""

    type: Literal["done"]
    finish_reason: Literal["complete"]
    usage: SpeakUsage
    time_to_first_audio_ms: float | None
    segments: int = Field(ge=0)


class SpeechStartedFrame(ServerEnvelope):
    """listen, converse: the VAD heard speech start."""

    type: Literal["speech_started"]
    segment_id: int = Field(ge=0)
    start_ms: int = Field(ge=0)


class SpeechEndedFrame(ServerEnvelope):
    """listen, converse: the VAD heard speech end."""

    type: Literal["speech_ended"]
    segment_id: int = Field(ge=0)
    end_ms: int = Field(ge=0)


class TranscriptFrame(ServerEnvelope):
    """listen, converse: an interim or final transcript of one segment."""

    type: Literal["transcript"]
    segment_id: int = Field(ge=0)
    text: str
    is_final: bool
    start_ms: int = Field(ge=0)
    end_ms: int = Field(ge=0)
    provider_id: str
    model_id: str


class ListenUsage(BaseModel):
    """What a listen request used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audio_ms: int = Field(ge=0)
    segments: int = Field(ge=0)


class ListenDoneFrame(ServerEnvelope):
    """listen: the terminal `done` frame."""

    type: Literal["done"]
    finish_reason: Literal["complete"]
    usage: ListenUsage


class BinaryAudioFrame(BaseModel):
    """A binary frame (both directions): byte 0 is N, bytes 1..N the UTF-8 request id,
    the rest audio in the request's format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(min_length=1)
    audio: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> BinaryAudioFrame:
        """Raw frame bytes -> the frame; raises ValueError on a malformed header."""
        if not data or not 1 <= data[0] <= MAX_REQUEST_ID_CHARS or len(data) < 1 + data[0]:
            raise ValueError("binary frame header must be N (1-128) then N bytes of id")
        size = data[0]
        return cls.model_validate(
            {"request_id": data[1 : 1 + size].decode("utf-8"), "audio": data[1 + size :]}
        )


class UserTurnFrame(ServerEnvelope):
    """converse: the user's turn is complete (its final transcripts, or typed text)."""

    type: Literal["user_turn"]
    turn_id: int = Field(ge=1)
    text: str


class ReplyStartedFrame(ServerEnvelope):
    """converse: the reply to a turn starts (the chat router is asked)."""

    type: Literal["reply_started"]
    turn_id: int = Field(ge=1)


class ReplyTextFrame(ServerEnvelope):
    """converse: a piece of the reply's text and the chat model that wrote it."""

    type: Literal["reply_text"]
    turn_id: int = Field(ge=1)
    delta: str
    model_id: str
    provider_id: str


class CallFunction(BaseModel):
    """The function a tool call names and its arguments (JSON text of an object)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    arguments: str


class WholeToolCall(BaseModel):
    """One whole tool call (OpenAI's chat shape)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Answer it with a `tool_result` of this `call_id`.")
    type: Literal["function"]
    function: CallFunction


class ToolCallsFrame(ServerEnvelope):
    """converse: the reply calls tools (all its calls, whole; they have no audio); answer
    each with `tool_result`."""

    type: Literal["tool_calls"]
    turn_id: int = Field(ge=1)
    calls: list[WholeToolCall] = Field(min_length=1)
    model_id: str
    provider_id: str


class ConverseSegmentFrame(ServerEnvelope):
    """converse: a sentence of the reply was wholly spoken (after its audio)."""

    type: Literal["segment"]
    turn_id: int = Field(ge=1)
    start_ms: int = Field(ge=0, description="Where it starts in the conversation's reply audio.")
    segment: Segment


class ReplyInterruptedFrame(ServerEnvelope):
    """converse: the reply stopped (barge-in or `interrupt`); drop reply audio after
    `kept_bytes` (of this conversation's reply audio)."""

    type: Literal["reply_interrupted"]
    turn_id: int = Field(ge=1)
    reason: Literal["barge_in", "cancelled"]
    kept_ms: int = Field(ge=0)
    sent_ms: int = Field(ge=0)
    kept_bytes: int = Field(ge=0)
    sent_bytes: int = Field(ge=0)
    text: str = Field(description="The part of the reply the history keeps.")


class TurnError(BaseModel):
    """Why a turn's reply failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    message: str


class TurnEndedFrame(ServerEnvelope):
    """converse: a turn is over; `reply_text` is what the history keeps of the reply."""

    type: Literal["turn_ended"]
    turn_id: int = Field(ge=1)
    reason: Literal["complete", "interrupted", "error"]
    user_text: str
    reply_text: str
    error: TurnError | None = None


class ConverseUsage(BaseModel):
    """What a conversation used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    turns: int = Field(ge=0)
    audio_in_ms: int = Field(ge=0)
    audio_out_ms: int = Field(ge=0)


class ConverseDoneFrame(ServerEnvelope):
    """converse: the terminal `done` frame."""

    type: Literal["done"]
    finish_reason: Literal["complete"]
    usage: ConverseUsage


CHAT_STREAM_FRAMES: tuple[type[ServerEnvelope], ...] = (ChunkFrame, ErrorFrame)
SPEAK_FRAMES: tuple[type[ServerEnvelope], ...] = (SegmentFrame, SpeakDoneFrame, ErrorFrame)
LISTEN_FRAMES: tuple[type[ServerEnvelope], ...] = (
    SpeechStartedFrame,
    TranscriptFrame,
    SpeechEndedFrame,
    ListenDoneFrame,
    ErrorFrame,
)
CONVERSE_FRAMES: tuple[type[ServerEnvelope], ...] = (
    SpeechStartedFrame,
    SpeechEndedFrame,
    TranscriptFrame,
    UserTurnFrame,
    ReplyStartedFrame,
    ReplyTextFrame,
    ToolCallsFrame,
    ConverseSegmentFrame,
    ReplyInterruptedFrame,
    TurnEndedFrame,
    ConverseDoneFrame,
    ErrorFrame,
)
SERVER_FRAMES: dict[str, tuple[type[ServerEnvelope], ...]] = {
    "chatStream": CHAT_STREAM_FRAMES,
    "speak": SPEAK_FRAMES,
    "listen": LISTEN_FRAMES,
    "converse": CONVERSE_FRAMES,
}
"""Each websocket endpoint's server text frames."""


def frame_type(model: type[BaseModel]) -> str:
    """The `type` a frame or message model's `Literal` fixes (e.g. "chunk")."""
    (value,) = get_args(model.model_fields["type"].annotation)
    return str(value)


def validate_server_frame(endpoint: str, data: dict[str, Any]) -> ServerEnvelope:
    """A server text frame of `endpoint` -> the frame model its `type` names.

    Raises `pydantic.ValidationError` when the frame does not match its model.
    """
    for model in SERVER_FRAMES[endpoint]:
        if frame_type(model) == data.get("type"):
            return model.model_validate(data)
    raise ValueError(f"{endpoint} sends no frame of type {data.get('type')!r}")


# ---- HTTP responses ---------------------------------------------------------------


class ChatResponse(BaseModel):
    """Glide's `POST /v1/language/{router}/chat` answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    created_at: int
    provider_id: str
    router_id: str
    model_id: str
    model_name: str
    cached: bool
    model_response: ModelResponse


class GlideError(BaseModel):
    """An HTTP error in Glide's shape (Glide endpoints, access and routing errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    message: str


class OpenAIErrorBody(BaseModel):
    """`error` of an OpenAI-shaped error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """An HTTP error of the OpenAI-compatible endpoints (also an SSE `error` event)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: OpenAIErrorBody


class HealthResponse(BaseModel):
    """`GET /v1/health`: the process serves HTTP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    healthy: bool


class StateStoreStatus(BaseModel):
    """The shared state store in `/v1/ready` (only with `state.redis`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Literal["redis"]
    up: bool = Field(description="false: Redis is away and this instance serves on local state")


class ReadyResponse(BaseModel):
    """`GET /v1/ready`: false (503) while draining. Redis being down never makes an
    instance unready; `state` says it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ready: bool
    reason: str | None = None
    state: StateStoreStatus | None = None


class RouterList(BaseModel):
    """`GET /v1/language` and `GET /v1/speech`: routers and their models, never a secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routers: list[dict[str, Any]]


class TranscriptionResponse(BaseModel):
    """`POST /v1/audio/transcriptions` with `response_format: json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    usage: dict[str, Any]
