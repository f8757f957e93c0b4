"""What the two audio endpoints share: finding the speech endpoint, the request's
admission and telemetry, and mapping a terminal error frame to an HTTP error."""

from __future__ import annotations

from typing import Any

from observability.telemetry import RequestTelemetry, Telemetry
from openai_api.errors import MODEL_NOT_FOUND, ApiError
from openai_api.types import GatewayView
from pipelines.common import Admission
from pipelines.endpoint import SocketEndpoint
from protocol.frames import ErrorName
from security.access import Client

STATUS_BY_ERROR: dict[str, int] = {
    ErrorName.ALL_MODELS_UNAVAILABLE: 503,
    ErrorName.SHUTTING_DOWN: 503,
    ErrorName.TOO_MANY_REQUESTS: 429,
    ErrorName.RATE_LIMITED: 429,
    ErrorName.UNKNOWN_ERROR: 500,
}
"""HTTP status of a terminal error frame's name; any other name is the client's (400)."""


def speech_endpoint(gateway: GatewayView, router_id: str, kind: str) -> SocketEndpoint:
    """The `kind` ("speak" | "listen") endpoint of speech router `router_id`, or 404."""
    by_kind = gateway.speech.get(router_id)
    if by_kind is None:
        raise ApiError(
            404,
            f"the model {router_id!r} does not exist: no speech router {router_id!r} "
            f"(use one of: {', '.join(sorted(gateway.speech)) or 'none'})",
            code=MODEL_NOT_FOUND,
            param="model",
        )
    endpoint = by_kind.get(kind)
    if endpoint is None:
        raise ApiError(
            404,
            f"speech router {router_id!r} has no {kind} models",
            code=MODEL_NOT_FOUND,
            param="model",
        )
    return endpoint


def admission_for(gateway: GatewayView, client: Client, tracked: RequestTelemetry) -> Admission:
    """One request's admission: refused while draining; its telemetry is `tracked`.

    The key's request rate was already spent by the handler.
    """
    return Admission(
        1,
        lambda: not gateway.draining,
        max_metadata_bytes=gateway.config.limits.max_metadata_bytes,
        request_telemetry=lambda _request_id: tracked,
        key_id=client.key_id,
    )


def telemetry_of(gateway: GatewayView) -> Telemetry:
    """The app's telemetry (a bare one when the gateway has none)."""
    return gateway.telemetry or Telemetry(gateway.clock)


def frame_error(data: dict[str, Any], redact: Any) -> ApiError:
    """A terminal `error` frame's JSON -> the `ApiError` to answer with."""
    error = data.get("error") or {}
    name = str(error.get("name") or ErrorName.UNKNOWN_ERROR)
    message = redact(str(error.get("message") or name))
    return ApiError(STATUS_BY_ERROR.get(name, 400), message, code=name)
