"""The wire format shared by every endpoint: binary audio framing and the terminal rule.

Binary frame: byte 0 = N (1-128), bytes 1..N = UTF-8 request_id, the rest audio.
A text frame ends its request when it carries a `finish_reason` (on a chunk,
on an error, or at the top level of e.g. `done`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_REQUEST_ID_BYTES = 128


def encode_audio(request_id: str, audio: bytes) -> bytes:
    """(request_id, audio) -> one binary frame: N, N bytes of id, audio."""
    rid = request_id.encode("utf-8")
    if not 1 <= len(rid) <= MAX_REQUEST_ID_BYTES:
        raise ValueError("request_id must encode to 1-128 bytes")
    return bytes([len(rid)]) + rid + audio


def decode_audio(data: bytes) -> tuple[str, bytes] | None:
    """One binary frame -> (request_id, audio), or None when the header is malformed."""
    if not data:
        return None
    size = data[0]
    if not 1 <= size <= MAX_REQUEST_ID_BYTES or len(data) < 1 + size:
        return None
    try:
        request_id = data[1 : 1 + size].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return request_id, data[1 + size :]


def finish_reason(frame: Mapping[str, Any]) -> str | None:
    """A server text frame -> its finish_reason if it is terminal, else None."""
    for key in ("chunk", "error"):
        inner = frame.get(key)
        if isinstance(inner, Mapping) and inner.get("finish_reason") is not None:
            return str(inner["finish_reason"])
    reason = frame.get("finish_reason")
    return None if reason is None else str(reason)


def error_name(frame: Mapping[str, Any]) -> str | None:
    """An `error` frame -> its `error.name`; any other frame -> None."""
    if frame.get("type") != "error":
        return None
    inner = frame.get("error")
    if isinstance(inner, Mapping):
        name = inner.get("name")
        return name if isinstance(name, str) else None
    return None
