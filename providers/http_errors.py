"""Turn HTTP-level failures of a vendor call into classified `ProviderError`s.

Flow: an error `aiohttp.ClientResponse` (or an aiohttp / timeout exception) comes
in; a `ProviderError` with category, status, `retryable` and `retry_after` comes
out. Messages carry the vendor's own error text, trimmed and with anything that
looks like an API key redacted; request headers never appear in them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from providers.types import ErrorCategory, ProviderError, classify_http_status

MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 500

_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*]{4,}")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Read a `Retry-After` header value into seconds to wait.

    In: delay-seconds ("120", "1.5") or an HTTP date ("Wed, 21 Oct 2015 07:28:00
    GMT") measured from `now` (default: the current UTC time). Out: seconds >= 0
    (a past date or negative number gives 0), or None when absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now if now is not None else datetime.now(UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return max(0.0, (when - reference).total_seconds())


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return `text` with each of `secrets` and every `sk-...` token replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEY_LIKE.sub("sk-***", text)


def _message_from_body(body: bytes, charset: str | None) -> str:
    text = body.decode(charset or "utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return " ".join(text.split())
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(parsed.get("message"), str):
            return str(parsed["message"])
    return " ".join(text.split())


async def read_bounded(resp: aiohttp.ClientResponse, limit: int = MAX_ERROR_BODY_BYTES) -> bytes:
    """At most `limit` bytes of a response body (an error body); whatever arrived on failure."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < limit:
            part = await resp.content.read(limit - size)
            if not part:
                break
            parts.append(part)
            size += len(part)
    except (TimeoutError, aiohttp.ClientError):
        pass  # the status is what matters; keep whatever body arrived
    return b"".join(parts)


def _retry_after_from_headers(resp: aiohttp.ClientResponse) -> float | None:
    millis = resp.headers.get("retry-after-ms")
    if millis is not None:
        parsed = parse_retry_after(millis)
        if parsed is not None:
            return parsed / 1000.0
    return parse_retry_after(resp.headers.get("Retry-After"))


async def error_from_response(
    resp: aiohttp.ClientResponse,
    provider_label: str,
    *,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """Build the `ProviderError` for a non-success vendor response.

    In: the response (its body is read, at most 64 KB) and a label such as
    "openai/gpt-4o-mini"; `secrets` (e.g. the API key) are redacted should the
    vendor echo them. Out: a `ProviderError` classified by status, carrying the
    vendor's message and `retry_after` from `retry-after-ms` / `Retry-After`.
    """
    body = await read_bounded(resp, MAX_ERROR_BODY_BYTES)
    message = redact(_message_from_body(body, resp.charset), secrets).strip()
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    if not message:
        message = resp.reason or "no error body"
    return ProviderError(
        classify_http_status(resp.status),
        f"{provider_label}: {message}",
        status=resp.status,
        retry_after=_retry_after_from_headers(resp),
    )


def error_from_exception(exc: BaseException, provider_label: str) -> ProviderError:
    """Classify a transport failure of a vendor call.

    In: an aiohttp exception or a timeout. Out: TIMEOUT for connect/socket
    timeouts, PROTOCOL for a broken or unreadable response body, TRANSIENT for
    refused, reset or dropped connections and other client errors.
    """
    if isinstance(exc, ProviderError):
        return exc
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, TimeoutError):  # includes aiohttp's ServerTimeoutError
        category = ErrorCategory.TIMEOUT
    elif isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        category = ErrorCategory.PROTOCOL
    else:
        category = ErrorCategory.TRANSIENT
    return ProviderError(category, f"{provider_label}: {redact(detail)}")
