"""Client-to-server messages of the endpoints (chatStream, speak, listen, converse),
as JSON-ready dicts.

Each builder takes what the caller knows and returns the message without its
`request_id` (the request handle adds it). Field names follow DESIGN section 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AudioFormat:
    """Audio on the wire: `encoding` (pcm_s16le, wav, flac, ogg_opus, mp3), rate, channels."""

    encoding: str = "pcm_s16le"
    sample_rate: int = 16000
    channels: int = 1

    def to_json(self) -> dict[str, Any]:
        """The `format` object of a speak or listen message."""
        return {
            "encoding": self.encoding,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
        }


def _with(base: dict[str, Any], **optional: Any) -> dict[str, Any]:
    base.update({k: v for k, v in optional.items() if v is not None})
    return base


def chat_message(
    message: str | Mapping[str, Any],
    *,
    message_history: Sequence[Mapping[str, Any]] | None = None,
    override_params: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A chatStream request (Glide's schema); a plain string is a user message.
    `tools` and `tool_choice` are OpenAI's shapes (Sluice's additions)."""
    body = {"role": "user", "content": message} if isinstance(message, str) else dict(message)
    return _with(
        {"type": "chat", "message": body},
        message_history=None if message_history is None else [dict(m) for m in message_history],
        override_params=None if override_params is None else dict(override_params),
        metadata=None if metadata is None else dict(metadata),
        tools=None if tools is None else [dict(t) for t in tools],
        tool_choice=tool_choice if isinstance(tool_choice, str | None) else dict(tool_choice),
    )


def speak_message(
    *,
    text: str | None,
    final: bool,
    format: AudioFormat | None = None,
    voice: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `speak` message that starts a speak request (`final` when all text is in it)."""
    return _with(
        {"type": "speak", "final": final},
        text=text,
        format=None if format is None else format.to_json(),
        voice=voice,
        metadata=None if metadata is None else dict(metadata),
    )


def text_message(text: str, *, final: bool = False) -> dict[str, Any]:
    """A `text` message appending streamed text to a speak request."""
    return {"type": "text", "text": text, "final": final}


def listen_message(
    *,
    format: AudioFormat,
    language: str | None = None,
    interim_results: bool | None = None,
    vad: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `listen` message that starts a listen request; audio follows as binary frames."""
    return _with(
        {"type": "listen", "format": format.to_json()},
        language=language,
        interim_results=interim_results,
        vad=None if vad is None else dict(vad),
        metadata=None if metadata is None else dict(metadata),
    )


def end_message() -> dict[str, Any]:
    """The `end` message: the listen request's audio is over."""
    return {"type": "end"}


def converse_message(
    *,
    format: AudioFormat,
    output_sample_rate: int | None = None,
    instructions: str | None = None,
    voice: str | None = None,
    turn_detection: bool | None = None,
    language: str | None = None,
    interim_results: bool | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: str | Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `converse` message that starts a conversation; the user's audio follows as
    binary frames. The reply audio is PCM16 mono at `output_sample_rate` (default: the
    speak router's rate)."""
    output = None
    if output_sample_rate is not None:
        output = {"encoding": "pcm_s16le", "sample_rate": output_sample_rate}
    return _with(
        {"type": "converse", "format": format.to_json()},
        output_format=output,
        instructions=instructions,
        voice=voice,
        turn_detection=turn_detection,
        language=language,
        interim_results=interim_results,
        tools=None if tools is None else [dict(t) for t in tools],
        tool_choice=tool_choice if isinstance(tool_choice, str | None) else dict(tool_choice),
        metadata=None if metadata is None else dict(metadata),
    )
