"""Server-to-client frames: the envelope every endpoint shares (DESIGN section 3).

A pipeline emits `Frame`s; the socket writer serializes them. `FrameFactory`
stamps the envelope (`type`, `request_id`, `id`, `created_at`, `router_id`,
`metadata`) for one request so pipeline code only says what is new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from providers.types import FinishReason


@dataclass(frozen=True, slots=True)
class Frame:
    """One outbound websocket frame: a JSON object (`data` dict) or audio (`bytes`).

    `terminal` marks the frame that ends its request (it carries a finish_reason).
    """

    request_id: str | None
    data: dict[str, Any] | bytes
    terminal: bool = False


class ErrorName:
    """Error names used on the wire (Glide's where Glide had one)."""

    PAYLOAD_PARSE_ERROR = "payload_parse_error"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    ROUTER_NOT_FOUND = "router_not_found"
    ROUTE_NOT_FOUND = "route_not_found"
    MODEL_UNAVAILABLE = "model_unavailable"
    ALL_MODELS_UNAVAILABLE = "all_models_unavailable"
    UNKNOWN_ERROR = "unknown_error"
    INVALID_REQUEST = "invalid_request"
    DUPLICATE_REQUEST_ID = "duplicate_request_id"
    UNSUPPORTED_MESSAGE_TYPE = "unsupported_message_type"
    TOO_MANY_REQUESTS = "too_many_requests"
    BAD_REQUEST = "bad_request"
    SHUTTING_DOWN = "shutting_down"
    SLOW_CONSUMER = "slow_consumer"
    # access (HTTP 401 / 403 before any upgrade)
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    # limits: each ends just the offending request (frames carry `limit`, the config key)
    RATE_LIMITED = "rate_limited"
    TOO_MANY_SOCKETS = "too_many_sockets"
    MESSAGE_HISTORY_TOO_LONG = "message_history_too_long"
    METADATA_TOO_LARGE = "metadata_too_large"
    TEXT_TOO_LONG = "text_too_long"
    AUDIO_TOO_LONG = "audio_too_long"
    # tools and images (400 on HTTP; the request ends, the socket lives)
    UNSUPPORTED_CAPABILITY = "unsupported_capability"
    INVALID_IMAGE = "invalid_image"


@dataclass(frozen=True, slots=True)
class FrameFactory:
    """Builds frames for one request of one router.

    `now` returns the current time in unix seconds (from the injected scheduler).
    """

    request_id: str | None
    router_id: str
    metadata: dict[str, Any] | None
    now: Callable[[], float]

    def envelope(self, frame_type: str, **fields: Any) -> dict[str, Any]:
        """The shared envelope plus `fields`: a JSON-ready dict."""
        data: dict[str, Any] = {
            "type": frame_type,
            "request_id": self.request_id,
            "id": self.request_id,
            "created_at": int(self.now()),
            "router_id": self.router_id,
            "metadata": self.metadata,
        }
        if fields:
            data.update(fields)
        return data

    def event(self, frame_type: str, **fields: Any) -> Frame:
        """A non-terminal JSON frame of `frame_type`."""
        return Frame(self.request_id, self.envelope(frame_type, **fields))

    def error(
        self, name: str, message: str, finish_reason: FinishReason | None = "error", **extra: Any
    ) -> Frame:
        """An error frame; terminal unless `finish_reason` is None."""
        error: dict[str, Any] = {"id": self.request_id, "name": name, "message": message}
        error.update(extra)
        if finish_reason is not None:
            error["finish_reason"] = finish_reason
        return Frame(
            self.request_id, self.envelope("error", error=error), terminal=finish_reason is not None
        )
