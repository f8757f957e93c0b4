"""Report provider attempts to `Telemetry`, and read a request's fate from its frames.

- `instrument_attempt(request, model, provider, is_final=)` wraps one provider
  attempt and passes its items through unchanged, reporting its outputs and
  exactly one verdict (success at completion or at the item `is_final`
  accepts, failure at error, abandoned at dispose). With `request=None` it
  returns the source untouched. Endpoints get their request's telemetry from
  `Admission.request_telemetry(request_id)`.
- `is_output_frame`, `outcome_of` and `model_of` classify outbound frames; the
  socket session uses them to account for every request of every endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable

from observability.telemetry import (
    CANCELLED,
    ERROR,
    OK,
    REJECTED,
    REJECTED_ERRORS,
    RequestTelemetry,
)
from operators.attempt import Watch, guard_attempt
from protocol.frames import Frame

T = TypeVar("T")

OUTPUT_TYPES = frozenset({"chunk", "transcript"})


def _identity(source: Observable[Any]) -> Observable[Any]:
    return source


def instrument_attempt(
    request: RequestTelemetry | None,
    model: str,
    provider: str,
    *,
    is_final: Callable[[T], bool] | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """One provider attempt's items in, the same items out; the attempt is reported.

    source: -a-b-F-c|     (F: is_final(F) is True)
    result: -a-b-F-c|     success reported at F, before F travels on (a terminal
                          frame downstream may dispose the attempt at once)
    source: -a-#          failure reported (stage mid_stream); `--#`: before_output
    dispose before a verdict: abandoned.
    """
    if request is None:
        return _identity
    return guard_attempt(watch=Watch(request, model, provider, is_final))


def is_output_frame(frame: Frame) -> bool:
    """Audio, chunk and transcript frames are a request's output; events and errors not."""
    data = frame.data
    return isinstance(data, bytes) or data.get("type") in OUTPUT_TYPES


def outcome_of(frame: Frame, answered: bool) -> tuple[str, str | None]:
    """(outcome, error name) of a request from its terminal frame.

    An error before any model answered is `rejected` when its name says the
    request itself was refused (bad payload, a limit); `answered` says whether a
    model produced output.
    """
    data = frame.data
    if isinstance(data, bytes) or data.get("type") != "error":
        return OK, None
    error = data.get("error") or {}
    name = str(error.get("name", "unknown_error"))
    if error.get("finish_reason") == "cancelled":
        return CANCELLED, None
    if name in REJECTED_ERRORS and not answered:
        return REJECTED, name
    return ERROR, name


def model_of(frame: Frame) -> tuple[str, str] | None:
    """(model_id, provider_id) named by an output frame, at its top level or one
    level down (`chunk`, `transcript`, `segment`), or None."""
    data = frame.data
    if isinstance(data, bytes):
        return None
    for part in (data, *(v for v in data.values() if isinstance(v, dict))):
        model = part.get("model_id")
        provider = part.get("provider_id")
        if isinstance(model, str) and isinstance(provider, str):
            return model, provider
    return None
