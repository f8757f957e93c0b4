"""What the client's streams yield: typed events parsed from server frames.

A non-terminal server frame -> one event; a terminal non-error frame -> the last
event (`ChatChunk` with a finish_reason, or `Done`); a terminal error frame is
raised instead (see `sluice_client.errors`). Every event keeps the frame it came from
in `frame` so nothing the server sent is hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice_client.framing import finish_reason


@dataclass(frozen=True)
class Event:
    """A frame of a type this client does not model: `type` and the whole `frame`."""

    request_id: str
    type: str
    frame: Mapping[str, Any] = field(repr=False)

    @property
    def metadata(self) -> Any:
        """The request's `metadata`, echoed by the server on every frame."""
        return self.frame.get("metadata")


@dataclass(frozen=True)
class ChatChunk(Event):
    """A piece of the answer; the last one has `finish_reason` (complete, max_tokens, ...).

    `tool_calls` are the tool calls this chunk carries (OpenAI's shape with `index`);
    an answer that stopped to call tools ends with `finish_reason` `other` and
    `finish_detail` `tool_calls`.
    """

    content: str = ""
    model_id: str | None = None
    provider_id: str | None = None
    model_name: str | None = None
    finish_reason: str | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    finish_detail: str | None = None


@dataclass(frozen=True)
class ModelReset(Event):
    """A model failed mid-answer: drop the partial output; the answer restarts on another.

    For chat, drop this request's text so far; for speak, drop the last
    `drop_bytes` audio bytes received (the partial audio of segment `segment`).
    """

    model_id: str | None = None
    message: str = ""
    segment: Any = None
    drop_bytes: int | None = None
    stage: str | None = None
    """Converse: the stage whose model failed (`chat` or `speak`)."""
    turn_id: Any = None
    """Converse: the turn it happened in."""


@dataclass(frozen=True)
class Notice(Event):
    """A non-terminal error other than a reset (e.g. `duplicate_request_id`)."""

    name: str = ""
    message: str = ""


@dataclass(frozen=True)
class SpeakSegment(Event):
    """Speak: which text span the audio just sent covers and which provider made it.
    Converse: a reply sentence wholly sent (`turn_id`, `start_ms` in the reply audio)."""

    @property
    def data(self) -> Mapping[str, Any]:
        """The segment object (the `segment` field, or the frame itself)."""
        inner = self.frame.get("segment")
        return inner if isinstance(inner, Mapping) else self.frame

    @property
    def turn_id(self) -> Any:
        """Converse: the turn whose reply this sentence is (None for speak)."""
        return self.frame.get("turn_id")

    @property
    def start_ms(self) -> Any:
        """Converse: where the sentence starts in the conversation's reply audio."""
        return self.frame.get("start_ms")


@dataclass(frozen=True)
class Transcript(Event):
    """Listen: text of one VAD segment; `is_final` once the segment is done."""

    text: str = ""
    is_final: bool = False
    segment_id: Any = None
    start_ms: float | None = None
    end_ms: float | None = None
    provider_id: str | None = None
    model_id: str | None = None


@dataclass(frozen=True)
class SpeechStarted(Event):
    """Listen: the VAD heard speech start."""


@dataclass(frozen=True)
class SpeechEnded(Event):
    """Listen: the VAD heard speech end."""


@dataclass(frozen=True)
class Done(Event):
    """Speak / listen: the request ended normally; `finish_reason` says how."""

    finish_reason: str = "complete"

    @property
    def usage(self) -> Mapping[str, Any]:
        """Converse: `turns`, `audio_in_ms`, `audio_out_ms` (empty for other requests)."""
        usage = self.frame.get("usage")
        return usage if isinstance(usage, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _inner(frame: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = frame.get(key)
    return value if isinstance(value, Mapping) else {}


def non_terminal_error(request_id: str, frame: Mapping[str, Any]) -> Event:
    """A non-terminal `error` frame -> `ModelReset` (model_unavailable) or `Notice`."""
    error = _inner(frame, "error")
    name = str(error.get("name") or "")
    message = str(error.get("message") or "")
    if name == "model_unavailable":
        return ModelReset(
            request_id,
            "error",
            frame,
            model_id=_str(error.get("model_id")),
            message=message,
            segment=error.get("segment", error.get("segment_id")),
            drop_bytes=drop if isinstance(drop := error.get("drop_bytes"), int) else None,
            stage=_str(error.get("stage")),
            turn_id=error.get("turn_id"),
        )
    return Notice(request_id, "error", frame, name=name, message=message)


def parse_event(request_id: str, frame: Mapping[str, Any]) -> Event:
    """A server frame that is not a terminal error -> its event."""
    kind = str(frame.get("type") or "")
    if kind == "error":
        return non_terminal_error(request_id, frame)
    if kind == "chunk":
        chunk = _inner(frame, "chunk")
        message = _inner(_inner(chunk, "model_response"), "message")
        return ChatChunk(
            request_id,
            kind,
            frame,
            content=str(message.get("content") or ""),
            model_id=_str(chunk.get("model_id")),
            provider_id=_str(chunk.get("provider_id")),
            model_name=_str(chunk.get("model_name")),
            finish_reason=finish_reason(frame),
            tool_calls=tuple(message.get("tool_calls") or ()),
            finish_detail=_str(chunk.get("finish_detail")),
        )
    if kind == "transcript":
        body = _inner(frame, "transcript") or frame
        return Transcript(
            request_id,
            kind,
            frame,
            text=str(body.get("text") or ""),
            is_final=bool(body.get("is_final")),
            segment_id=body.get("segment_id"),
            start_ms=body.get("start_ms"),
            end_ms=body.get("end_ms"),
            provider_id=_str(body.get("provider_id")),
            model_id=_str(body.get("model_id")),
        )
    if kind == "segment":
        return SpeakSegment(request_id, kind, frame)
    if kind == "speech_started":
        return SpeechStarted(request_id, kind, frame)
    if kind == "speech_ended":
        return SpeechEnded(request_id, kind, frame)
    reason = finish_reason(frame)
    if reason is not None:
        return Done(request_id, kind, frame, finish_reason=reason)
    return Event(request_id, kind, frame)
