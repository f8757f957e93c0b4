"""The interface of a voice conversation: its inputs, its events and the parts it composes.

`pipelines.conversation.converse(parts, settings)` turns a stream of
`ConversationInput` into a stream of `ConversationEvent`; this module names both,
so the converse endpoint and the OpenAI Realtime layer can map their own wire
messages onto them (docs/pipelines.md, "The conversation interface").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from reactivex import Observable

from audio.sentences import Sentence, TextPiece
from operators.failover import Reset
from operators.vad import SpeechEnded, SpeechStarted
from pipelines.chat_router import ChatEvent, ModelInfo
from pipelines.listen_router import SegmentTranscript
from pipelines.speech_in import Heard, Transcribed
from pipelines.speech_out import Spoken
from protocol.chat import ChatRequest
from providers.stt_types import SegmentAudio as HeardAudio
from providers.tts_types import Int16Array
from providers.types import ToolCall

ToolChoiceValue = str | dict[str, Any]
"""`tool_choice` in OpenAI's chat shape: `auto`, `none`, `required` or
`{"type": "function", "function": {"name"}}`."""

# ---- inputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserAudio:
    """The user's audio: PCM16 mono at `PIPELINE_RATE` (16 kHz)."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class UserText:
    """A typed user message; `respond` asks for a reply at once (when none runs)."""

    text: str
    respond: bool = True


@dataclass(frozen=True, slots=True)
class CommitAudio:
    """Turn detection off: the audio buffered since the last commit is one user turn."""


@dataclass(frozen=True, slots=True)
class ClearAudio:
    """Turn detection off: drop the audio buffered since the last commit."""


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """Reply now to the history (`instructions` overrides the system prompt for it)."""

    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class CancelResponse:
    """Stop the running reply as a barge-in would (the history keeps what was heard)."""


@dataclass(frozen=True, slots=True)
class Played:
    """The client has played the reply audio up to `ms` (of the conversation's reply audio)."""

    ms: int


@dataclass(frozen=True, slots=True)
class Configure:
    """Change settings for later turns (None keeps a setting; `tools=[]` removes the tools)."""

    instructions: str | None = None
    voice: str | None = None
    turn_detection: bool | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: ToolChoiceValue | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The output of the reply's tool call `call_id`; with `respond`, a reply starts
    once every call of that reply has its result (and no reply runs)."""

    call_id: str
    output: str
    respond: bool = True


ConversationInput = (
    UserAudio
    | UserText
    | CommitAudio
    | ClearAudio
    | CreateResponse
    | CancelResponse
    | Played
    | Configure
    | ToolResult
)
"""What a conversation consumes; the inputs completing is the end of the conversation."""

# ---- events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserTurn:
    """The user's turn `turn_id` is complete (`text`: all its finals, or the typed text)."""

    turn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class ReplyStarted:
    """The reply of turn `turn_id` starts (the chat router is asked)."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class ReplyText:
    """A piece of the reply's text, from `model`."""

    turn_id: int
    delta: str
    model: ModelInfo


@dataclass(frozen=True, slots=True)
class ReplyToolCalls:
    """The reply of `turn_id` calls tools: every call of the answer, whole (id, name,
    JSON arguments), from `model`; the client answers each with a `ToolResult`."""

    turn_id: int
    calls: tuple[ToolCall, ...]
    model: ModelInfo


@dataclass(frozen=True, slots=True)
class ReplySentence:
    """A sentence of the reply starts being spoken at `start_ms` of the reply audio."""

    turn_id: int
    sentence: Sentence
    start_ms: int


@dataclass(frozen=True, slots=True)
class ReplyAudio:
    """Reply audio (PCM16 mono at the output rate) from speak model `model_id`."""

    turn_id: int
    samples: Int16Array
    model_id: str


@dataclass(frozen=True, slots=True)
class ReplyAudioDropped:
    """Speak model `model_id` failed inside a sentence: drop the last `samples` of audio;
    the sentence is spoken again by the next model."""

    turn_id: int
    model_id: str
    samples: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class ReplySegment:
    """Sentence `sentence` is wholly spoken: `audio_ms` from `start_ms`, by `model_id`."""

    turn_id: int
    sentence: Sentence
    model_id: str | None
    provider_id: str | None
    start_ms: int
    audio_ms: int
    samples: int = 0


@dataclass(frozen=True, slots=True)
class ChatRestarted:
    """Chat model `model_id` broke mid-answer and the answer restarts on the next model."""

    turn_id: int
    model_id: str


@dataclass(frozen=True, slots=True)
class ReplyInterrupted:
    """The reply of `turn_id` stopped (barge-in or cancel): audio after `kept_ms` (of the
    conversation's reply audio) was not heard and is to be dropped; `sent_ms` is how much
    was sent; `text` is what the history keeps."""

    turn_id: int
    kept_ms: int
    sent_ms: int
    text: str
    reason: Literal["barge_in", "cancelled"]
    kept_samples: int = 0
    sent_samples: int = 0


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """Turn `turn_id` is over: its reply `complete`, `interrupted` or failed (`error`)."""

    turn_id: int
    reason: Literal["complete", "interrupted", "error"]
    user_text: str
    reply_text: str
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """A non-terminal problem with one input (e.g. committing an empty buffer)."""

    name: str
    message: str


ConversationEvent = (
    SpeechStarted
    | SpeechEnded
    | Transcribed
    | UserTurn
    | ReplyStarted
    | ReplyText
    | ReplyToolCalls
    | ChatRestarted
    | ReplySentence
    | ReplyAudio
    | ReplyAudioDropped
    | ReplySegment
    | ReplyInterrupted
    | TurnEnded
    | Notice
)
"""What a conversation emits."""

# ---- parts and settings ------------------------------------------------------------

Speaker = Callable[[str | None], Callable[[Observable[TextPiece]], Observable[Spoken]]]
"""A voice in; an operator from text pieces to spoken items out (`speak_text`, curried)."""


@dataclass(frozen=True)
class ConversationParts:
    """The stages a conversation composes (production: the routers; tests: cold sources).

    `hear`: PCM in, VAD boundaries and transcripts out (`pipelines.speech_in.hear`);
    `transcribe`: one committed segment in, its transcripts out
    (`ListenRouter.transcribe`); `chat`: a request in, its events out
    (`ChatRouter.stream`); `speak`: a voice in, `speak_text` out; `provider_id`:
    a speak model id in, its provider id out; `output_rate`: reply audio's rate;
    `clock` (seconds): a `Played` report is taken to advance in real time after it
    arrives (None: a report stands as sent).
    """

    hear: Callable[[Observable[bytes]], Observable[Heard]]
    transcribe: Callable[[HeardAudio], Observable[SegmentTranscript | Reset]]
    chat: Callable[[ChatRequest], Observable[ChatEvent]]
    speak: Speaker
    provider_id: Callable[[str], str]
    output_rate: int
    clock: Callable[[], float] | None = None


@dataclass
class ConversationSettings:
    """One conversation's settings (`Configure` changes them as it goes)."""

    instructions: str | None = None
    voice: str | None = None
    max_history: int = 20
    turn_detection: bool = True
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: ToolChoiceValue | None = None

    def update(self, change: Configure) -> None:
        """A `Configure` in: each setting it names replaces this one's (None keeps it)."""
        for name in ("instructions", "voice", "turn_detection", "tools", "tool_choice"):
            value = getattr(change, name)
            if value is not None:
                setattr(self, name, value)


@dataclass
class ConversationStats:
    """Counters the endpoint's closing frame reports."""

    turns: int = 0
    audio_in_samples: int = 0
    audio_out_samples: int = 0
