"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Handlers raise `ApiError`; `openai_errors` turns it into the JSON response with
its HTTP status. `from_failure` maps a routing failure (all models unavailable,
a provider's 400) to the status and code a client of OpenAI expects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from operators.failover import AllModelsUnavailable
from pipelines.chat_router import MissingCapability
from protocol.frames import ErrorName
from providers.types import ErrorCategory, ProviderError
from transport.http_json import json_response

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
PERMISSION = "permission_error"
RATE_LIMIT = "rate_limit_error"
AUTHENTICATION = "authentication_error"

MODEL_NOT_FOUND = "model_not_found"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answered as OpenAI's error object with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type or (INVALID_REQUEST if status < 500 else SERVER_ERROR)
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body (also the payload of an SSE error event)."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> web.Response:
        """The HTTP response for this error."""
        return json_response(self.body(), status=self.status, headers=self.headers)


def from_failure(error: Exception, redact: Callable[[str], str]) -> ApiError:
    """A routing or pipeline failure -> the `ApiError` to answer with.

    AllModelsUnavailable -> 503 `all_models_unavailable`; MissingCapability -> 400
    `unsupported_capability`; a provider's own 400
    (the client's input) -> 400 `bad_request`; anything else -> 500.
    """
    if isinstance(error, AllModelsUnavailable):
        return ApiError(503, redact(str(error)), code=ErrorName.ALL_MODELS_UNAVAILABLE)
    if isinstance(error, MissingCapability):
        param = "messages" if error.capability != "tools" else "tools"
        return ApiError(400, str(error), code=ErrorName.UNSUPPORTED_CAPABILITY, param=param)
    if isinstance(error, ProviderError):
        if error.category is ErrorCategory.BAD_REQUEST:
            return ApiError(400, redact(str(error)), code=ErrorName.BAD_REQUEST)
        return ApiError(503, redact(str(error)), code=ErrorName.ALL_MODELS_UNAVAILABLE)
    return ApiError(500, f"internal error: {type(error).__name__}", code=ErrorName.UNKNOWN_ERROR)


def too_large() -> ApiError:
    """The 413 `payload_too_large` of a body over the server's body limit."""
    return ApiError(
        413,
        "the request body is larger than the server accepts (limits.max_text_frame_bytes)",
        code=ErrorName.PAYLOAD_TOO_LARGE,
    )


def openai_errors(handler: Handler) -> Handler:
    """Wrap a handler so that an `ApiError` it raises becomes OpenAI's error response."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()
        except web.HTTPRequestEntityTooLarge:
            return too_large().response()

    return wrapped
