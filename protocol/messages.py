"""Client-to-server frames: parse raw websocket frames into typed messages.

Text frame (one strict RFC 8259 JSON object, `protocol.jsoncodec`) -> `ClientMessage`
or `BadMessage`; `NaN`, `Infinity`, numbers that overflow a double and invalid
UTF-8 (lone surrogates) are `payload_parse_error`, so nothing non-standard gets
in to be echoed back.
Binary frame (byte 0 = N, bytes 1..N = UTF-8 request_id, rest = audio) ->
`ClientMessage(type="audio")` or `BadMessage`. Nothing here raises on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import jsoncodec
from protocol.frames import ErrorName

MAX_REQUEST_ID_CHARS = 128
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a client message may have.

Deeper values would be re-serialized (metadata is echoed on every frame, params
go to providers) at a deeper stack than they were parsed at, where Python's
recursion limit could fail them; no real message needs more.
"""
CANCEL = "cancel"
INVALID_UTF8 = "\udcff"
"""What a text frame that is not UTF-8 is read as (`transport.ws_text`): a lone
surrogate, which no valid UTF-8 frame can decode to, so it cannot collide."""


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A well-formed client message: `body` is the whole JSON object."""

    request_id: str
    type: str
    body: dict[str, Any]
    audio: bytes | None = None

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The message's `metadata` object, echoed on every frame of its request."""
        value = self.body.get("metadata")
        return value if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A frame that could not be accepted; `request_id` is None when it is unknowable."""

    request_id: str | None
    name: str
    message: str


Inbound = ClientMessage | BadMessage


def _request_id(obj: dict[str, Any]) -> str | BadMessage:
    raw = obj.get("request_id", obj.get("id"))
    if raw is None:
        return BadMessage(None, ErrorName.INVALID_REQUEST, "request_id (or id) is required")
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_REQUEST_ID_CHARS:
        return BadMessage(
            None,
            ErrorName.INVALID_REQUEST,
            f"request_id must be a string of 1-{MAX_REQUEST_ID_CHARS} characters",
        )
    return raw


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` nests arrays and objects more than `limit` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _maybe_too_deep(raw: str, obj: Any) -> bool:
    # a frame with few brackets cannot nest deeply: skip the walk for most messages
    if raw.count("{") + raw.count("[") <= MAX_JSON_DEPTH:
        return False
    return json_depth_exceeds(obj)


def parse_text(raw: str, default_type: str) -> Inbound:
    """One text frame -> a message with `type` defaulted to the endpoint's own."""
    if raw == INVALID_UTF8:
        return BadMessage(None, ErrorName.PAYLOAD_PARSE_ERROR, "text frame is not valid UTF-8")
    try:
        obj = jsoncodec.loads(raw)
    except (ValueError, RecursionError) as error:
        return BadMessage(None, ErrorName.PAYLOAD_PARSE_ERROR, f"frame is not valid JSON: {error}")
    if not isinstance(obj, dict):
        return BadMessage(None, ErrorName.PAYLOAD_PARSE_ERROR, "frame must be a JSON object")
    request_id = _request_id(obj)
    if isinstance(request_id, BadMessage):
        return request_id
    if _maybe_too_deep(raw, obj):
        return BadMessage(
            request_id,
            ErrorName.INVALID_REQUEST,
            f"the message nests arrays and objects more than {MAX_JSON_DEPTH} levels deep",
        )
    msg_type = obj.get("type", default_type)
    if not isinstance(msg_type, str):
        return BadMessage(request_id, ErrorName.INVALID_REQUEST, "type must be a string")
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return BadMessage(request_id, ErrorName.INVALID_REQUEST, "metadata must be a JSON object")
    return ClientMessage(request_id, msg_type, obj)


def parse_binary(data: bytes) -> Inbound:
    """One binary frame -> an `audio` message for the request named in its header."""
    if not data:
        return BadMessage(None, ErrorName.INVALID_REQUEST, "empty binary frame")
    size = data[0]
    if not 1 <= size <= MAX_REQUEST_ID_CHARS or len(data) < 1 + size:
        return BadMessage(
            None, ErrorName.INVALID_REQUEST, "binary frame header must be N then N bytes of id"
        )
    try:
        request_id = data[1 : 1 + size].decode("utf-8")
    except UnicodeDecodeError:
        return BadMessage(None, ErrorName.INVALID_REQUEST, "binary frame request_id is not UTF-8")
    return ClientMessage(request_id, "audio", {}, audio=data[1 + size :])


def encode_binary(request_id: str, payload: bytes) -> bytes:
    """Prefix `payload` with the request id header of a binary frame."""
    rid = request_id.encode("utf-8")
    if not 1 <= len(rid) <= MAX_REQUEST_ID_CHARS:
        raise ValueError("request_id must encode to 1-128 bytes")
    return bytes([len(rid)]) + rid + payload
