"""The events of a conversation (`converse`) that the other endpoints do not have.

converse server frame ─► parse_converse_event ─► UserTurn | ReplyStarted |
    ReplyText | ToolCalls | ReplyInterrupted | TurnEnded
    (anything else ─► events.parse_event: SpeechStarted, Transcript,
    SpeakSegment, ModelReset, Notice, Done, ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sluice_client.events import Event, parse_event


@dataclass(frozen=True)
class UserTurn(Event):
    """The user's turn is complete: all its final transcripts joined (or the typed text)."""

    turn_id: int = 0
    text: str = ""


@dataclass(frozen=True)
class ReplyStarted(Event):
    """The chat router is asked for the reply to turn `turn_id`."""

    turn_id: int = 0


@dataclass(frozen=True)
class ReplyText(Event):
    """A piece of the reply's text, from model `model_id`."""

    turn_id: int = 0
    delta: str = ""
    model_id: str | None = None
    provider_id: str | None = None


@dataclass(frozen=True)
class ToolCalls(Event):
    """The reply calls tools: every call, whole (`{id, type, function: {name,
    arguments}}`); answer each with `Conversation.tool_result(call_id, output)`."""

    turn_id: int = 0
    calls: tuple[Mapping[str, Any], ...] = ()
    model_id: str | None = None
    provider_id: str | None = None


@dataclass(frozen=True)
class ReplyInterrupted(Event):
    """The reply stopped (`reason` barge_in or cancelled): stop playback at once and drop
    reply audio after `kept_bytes`; `text` is what the history keeps."""

    turn_id: int = 0
    reason: str = ""
    kept_ms: float = 0
    sent_ms: float = 0
    kept_bytes: int = 0
    sent_bytes: int = 0
    text: str = ""


@dataclass(frozen=True)
class TurnEnded(Event):
    """Turn `turn_id` is over: `reason` complete, interrupted or error (then
    `error_name` / `error_message`); `reply_text` is what the history keeps."""

    turn_id: int = 0
    reason: str = ""
    user_text: str = ""
    reply_text: str = ""
    error_name: str | None = None
    error_message: str | None = None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _num(value: Any) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_converse_event(request_id: str, frame: Mapping[str, Any]) -> Event:
    """A converse server frame that is not a terminal error -> its event."""
    kind = str(frame.get("type") or "")
    turn = _int(frame.get("turn_id"))
    if kind == "user_turn":
        return UserTurn(request_id, kind, frame, turn_id=turn, text=str(frame.get("text") or ""))
    if kind == "reply_started":
        return ReplyStarted(request_id, kind, frame, turn_id=turn)
    if kind == "reply_text":
        return ReplyText(
            request_id,
            kind,
            frame,
            turn_id=turn,
            delta=str(frame.get("delta") or ""),
            model_id=_opt_str(frame.get("model_id")),
            provider_id=_opt_str(frame.get("provider_id")),
        )
    if kind == "tool_calls":
        calls = frame.get("calls")
        return ToolCalls(
            request_id,
            kind,
            frame,
            turn_id=turn,
            calls=tuple(c for c in calls if isinstance(c, Mapping))
            if isinstance(calls, list)
            else (),
            model_id=_opt_str(frame.get("model_id")),
            provider_id=_opt_str(frame.get("provider_id")),
        )
    if kind == "reply_interrupted":
        return ReplyInterrupted(
            request_id,
            kind,
            frame,
            turn_id=turn,
            reason=str(frame.get("reason") or ""),
            kept_ms=_num(frame.get("kept_ms")),
            sent_ms=_num(frame.get("sent_ms")),
            kept_bytes=_int(frame.get("kept_bytes")),
            sent_bytes=_int(frame.get("sent_bytes")),
            text=str(frame.get("text") or ""),
        )
    if kind == "turn_ended":
        error = frame.get("error")
        error = error if isinstance(error, Mapping) else {}
        return TurnEnded(
            request_id,
            kind,
            frame,
            turn_id=turn,
            reason=str(frame.get("reason") or ""),
            user_text=str(frame.get("user_text") or ""),
            reply_text=str(frame.get("reply_text") or ""),
            error_name=_opt_str(error.get("name")),
            error_message=_opt_str(error.get("message")),
        )
    return parse_event(request_id, frame)
