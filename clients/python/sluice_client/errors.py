"""Typed errors the client raises: one `SluiceError` subclass per wire error name.

A terminal `error` frame `{"error": {"name", "message", "finish_reason"}}` ->
`error_from_wire(...)` -> the subclass registered for that name (unknown names
become a plain `SluiceError`). Every error says whether sending the request
again (with a new request_id) may succeed: `retryable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar


class SluiceError(Exception):
    """A request (or the connection under it) ended in failure.

    `name` is the wire error name, `request_id` the request it ended (None for a
    connection-level failure), `retryable` whether a new attempt may succeed,
    `frame` the server frame that carried it (None when the client raised it).
    """

    NAME: ClassVar[str] = "unknown_error"
    RETRYABLE: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
        frame: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name or self.NAME
        self.request_id = request_id
        self.retryable = self.RETRYABLE if retryable is None else retryable
        self.frame = frame

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, request_id={self.request_id!r}, "
            f"retryable={self.retryable}, message={self.message!r})"
        )


class AllModelsUnavailable(SluiceError):
    """Every model of the router failed this request; a later attempt may find one healthy."""

    NAME = "all_models_unavailable"
    RETRYABLE = True


class ShuttingDown(SluiceError):
    """The instance ended the request because it is draining; retry on a new connection."""

    NAME = "shutting_down"
    RETRYABLE = True


class Cancelled(SluiceError):
    """The request was cancelled (by this client or the server)."""

    NAME = "cancelled"


class BadRequest(SluiceError):
    """The server or the provider rejected the request's content; do not resend it as is."""

    NAME = "bad_request"


class TooManyRequests(SluiceError):
    """The socket's limit of requests in flight was reached; retry later."""

    NAME = "too_many_requests"
    RETRYABLE = True


class SlowConsumer(SluiceError):
    """The server's outbound queue for this socket overflowed."""

    NAME = "slow_consumer"
    RETRYABLE = True


class RouterNotFound(SluiceError):
    """The router (or the endpoint of a speech router) does not exist on the server."""

    NAME = "router_not_found"


class ConnectionLost(SluiceError):
    """The websocket closed under a request that had already received frames.

    `close_code` is the websocket close code (1006 or None for a cut without a
    close frame). Retryable unless the server closed for policy (1008) or an
    oversized frame (1009).
    """

    NAME = "connection_lost"
    RETRYABLE = True

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        retryable: bool | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, retryable=retryable)
        self.close_code = close_code


class ConnectFailed(SluiceError):
    """No websocket could be opened for the request in time (or the server refused for good).

    `status` is the HTTP status of the refused upgrade, if there was one.
    """

    NAME = "connect_failed"
    RETRYABLE = True

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        retryable: bool | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, retryable=retryable)
        self.status = status


class ClientClosed(SluiceError):
    """The client was closed while the request was in flight."""

    NAME = "client_closed"


ERRORS_BY_NAME: Mapping[str, type[SluiceError]] = MappingProxyType(
    {
        "all_models_unavailable": AllModelsUnavailable,
        "shutting_down": ShuttingDown,
        "cancelled": Cancelled,
        "bad_request": BadRequest,
        "payload_parse_error": BadRequest,
        "invalid_request": BadRequest,
        "unsupported_message_type": BadRequest,
        "duplicate_request_id": BadRequest,
        "too_many_requests": TooManyRequests,
        "slow_consumer": SlowConsumer,
        "router_not_found": RouterNotFound,
    }
)
"""Wire error name -> the class raised for it."""


def error_from_wire(frame: Mapping[str, Any]) -> SluiceError:
    """An `error` frame -> the typed error for its `error.name` (unknown names: SluiceError)."""
    body = frame.get("error")
    error: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    name = str(error.get("name") or "unknown_error")
    message = str(error.get("message") or name)
    request_id = frame.get("request_id")
    cls = ERRORS_BY_NAME.get(name, SluiceError)
    return cls(
        message,
        name=name,
        request_id=request_id if isinstance(request_id, str) else None,
        frame=frame,
    )
