"""Realtime client events: one websocket text frame in, a typed event (or a Problem) out.

    '{"type": "input_audio_buffer.append", "audio": "..."}' ─► parse_client_event
        ─► SessionUpdate | AudioAppend | AudioCommit | AudioClear | ItemCreate
           | ResponseCreate | ResponseCancel        (or raises Problem)

Events of the API that Sluice does not serve (item delete / truncate / retrieve,
`output_audio_buffer.clear`, transcription sessions) are refused by name with
code `unsupported_event`; unknown types with `invalid_value` on `type`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import jsoncodec
from protocol.messages import json_depth_exceeds
from realtime.problems import Problem


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """`session.update`: the `session` object (applied by `session.apply_update`)."""

    event_id: str | None
    session: object


@dataclass(frozen=True, slots=True)
class AudioAppend:
    """`input_audio_buffer.append`: base64 audio in the session's input format."""

    event_id: str | None
    audio: object


@dataclass(frozen=True, slots=True)
class AudioCommit:
    """`input_audio_buffer.commit`: the buffered audio becomes a user message."""

    event_id: str | None


@dataclass(frozen=True, slots=True)
class AudioClear:
    """`input_audio_buffer.clear`: the buffered audio is dropped."""

    event_id: str | None


@dataclass(frozen=True, slots=True)
class ItemCreate:
    """`conversation.item.create`: a message item (its `type`, `role`, `content`)."""

    event_id: str | None
    item: dict[str, Any]
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    """`response.create`: reply now; `instructions` overrides the session's for it."""

    event_id: str | None
    instructions: str | None
    text_only: bool | None


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    """`response.cancel` (of `response_id`, or whichever runs)."""

    event_id: str | None
    response_id: str | None


ClientEvent = (
    SessionUpdate
    | AudioAppend
    | AudioCommit
    | AudioClear
    | ItemCreate
    | ResponseCreate
    | ResponseCancel
)

UNSUPPORTED = frozenset(
    {
        "conversation.item.delete",
        "conversation.item.truncate",
        "conversation.item.retrieve",
        "output_audio_buffer.clear",
        "transcription_session.update",
    }
)
SUPPORTED = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "response.create",
    "response.cancel",
)


def _optional_str(body: dict[str, Any], key: str, event_id: str | None) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise Problem("invalid_value", f"{key} must be a string", key, event_id)
    return value


def _response_create(body: dict[str, Any], event_id: str | None) -> ResponseCreate:
    response = body.get("response") or {}
    if not isinstance(response, dict):
        raise Problem("invalid_value", "response must be an object", "response", event_id)
    if response.get("conversation") == "none":
        raise Problem(
            "unsupported",
            "out-of-band responses (conversation: none) are not supported",
            "response.conversation",
            event_id,
        )
    if response.get("tools"):
        raise Problem("unsupported", "tools are not supported", "response.tools", event_id)
    instructions = response.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise Problem(
            "invalid_value", "instructions must be a string", "response.instructions", event_id
        )
    modalities = response.get("output_modalities", response.get("modalities"))
    text_only = None
    if modalities is not None:
        if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}:
            raise Problem(
                "invalid_value",
                "modalities are a list of 'text' and 'audio'",
                "response.output_modalities",
                event_id,
            )
        text_only = "audio" not in modalities
    return ResponseCreate(event_id, instructions, text_only)


def parse_client_event(text: str | bytes) -> ClientEvent:
    """A text frame in; the typed client event out. Raises `Problem` for bad JSON,
    an unknown or unsupported `type`, or a malformed field (its name in `param`)."""
    try:
        body = jsoncodec.loads(text)
    except (ValueError, RecursionError) as error:
        raise Problem("invalid_json", f"the event is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise Problem("invalid_json", "an event is a JSON object")
    if json_depth_exceeds(body):
        raise Problem("invalid_json", "the event nests JSON too deeply")
    raw_id = body.get("event_id")
    event_id = raw_id if isinstance(raw_id, str) else None
    kind = body.get("type")
    if kind == "session.update":
        return SessionUpdate(event_id, body.get("session"))
    if kind == "input_audio_buffer.append":
        return AudioAppend(event_id, body.get("audio"))
    if kind == "input_audio_buffer.commit":
        return AudioCommit(event_id)
    if kind == "input_audio_buffer.clear":
        return AudioClear(event_id)
    if kind == "conversation.item.create":
        item = body.get("item")
        if not isinstance(item, dict):
            raise Problem("invalid_value", "item must be an object", "item", event_id)
        return ItemCreate(event_id, item, _optional_str(body, "previous_item_id", event_id))
    if kind == "response.create":
        return _response_create(body, event_id)
    if kind == "response.cancel":
        return ResponseCancel(event_id, _optional_str(body, "response_id", event_id))
    if isinstance(kind, str) and kind in UNSUPPORTED:
        raise Problem("unsupported_event", f"{kind} is not supported by Sluice", "type", event_id)
    raise Problem(
        "invalid_value",
        f"Invalid value: {kind!r}. Supported values are: {', '.join(SUPPORTED)}.",
        "type",
        event_id,
    )
