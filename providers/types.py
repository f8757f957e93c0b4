"""The shapes every chat provider adapter speaks, independent of any vendor.

Flow: a `ChatParams` (messages + merged params) goes into an adapter; a stream of
`ChatDelta` comes out (the last one carries `finish_reason`), or one `ChatResult`
for the non-streaming call. Vendor failures leave an adapter only as
`ProviderError`, classified once, with `retryable` and a `category`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

FinishReason = Literal["complete", "max_tokens", "content_filtered", "cancelled", "error", "other"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message: `role` is system, user or assistant."""

    role: str
    content: str
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The message as the JSON object most vendors accept."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True, slots=True)
class Continuation:
    """Go on from `partial`, the answer so far (another model broke mid-stream).

    `instruction` (may be empty) is added after the request's own system prompt,
    never replacing it. Only adapters that declare `continues` receive one; each
    puts `partial` on the wire its vendor's way (a prefill, a trailing assistant
    message with the vendor's flag) and streams only what comes after it.
    """

    partial: str
    instruction: str = ""


@dataclass(frozen=True, slots=True)
class ChatParams:
    """What one attempt sends: the messages and vendor params (temperature, ...),
    and, when it continues a broken answer, the `continuation`."""

    messages: tuple[Message, ...]
    params: dict[str, Any] = field(default_factory=dict)
    continuation: Continuation | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts in Glide's names."""

    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """One streamed piece of an answer. The last piece has `finish_reason` set."""

    content: str
    finish_reason: FinishReason | None = None
    usage: TokenUsage | None = None
    metadata: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A whole (non-streamed) answer."""

    content: str
    finish_reason: FinishReason
    usage: TokenUsage
    role: str = "assistant"
    metadata: dict[str, str] = field(default_factory=dict)


class ErrorCategory(StrEnum):
    """Why an attempt failed; decides retry and health (LiveKit / Pipecat style)."""

    TRANSIENT = "transient"  # 5xx, refused, reset: try the next model
    RATE_LIMITED = "rate_limited"  # 429: cool the model down for Retry-After
    AUTH = "auth"  # 401/403: the model stays down until config reload
    BAD_REQUEST = "bad_request"  # 400 for the client's own input: not the provider's fault
    TIMEOUT = "timeout"  # connect, first chunk, idle or overall deadline
    EMPTY_OUTPUT = "empty_output"  # completed but said nothing
    PROTOCOL = "protocol"  # malformed or truncated stream


_RETRYABLE = {
    ErrorCategory.TRANSIENT: True,
    ErrorCategory.RATE_LIMITED: True,
    ErrorCategory.AUTH: True,  # another model has other keys
    ErrorCategory.BAD_REQUEST: False,
    ErrorCategory.TIMEOUT: True,
    ErrorCategory.EMPTY_OUTPUT: True,
    ErrorCategory.PROTOCOL: True,
}


class ProviderError(Exception):
    """A classified failure of one provider attempt.

    `retryable` says whether another model may succeed where this one failed;
    `retry_after` (seconds) comes from a 429's Retry-After header when present.
    """

    def __init__(
        self,
        category: ErrorCategory,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.retryable = _RETRYABLE[category] if retryable is None else retryable

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.category.value}{status}: {self.message}"


def classify_http_status(status: int) -> ErrorCategory:
    """Map an HTTP error status to an error category (4xx other than 408/429 is final)."""
    if status == 429:
        return ErrorCategory.RATE_LIMITED
    if status in (401, 402, 403):
        # 402: billing; like a bad key, this model's account stays broken until fixed
        return ErrorCategory.AUTH
    if status == 404:
        # a misconfigured model or deployment: the provider's fault, not the client's
        return ErrorCategory.TRANSIENT
    if status in (408, 499):
        return ErrorCategory.TIMEOUT
    if 400 <= status < 500:
        return ErrorCategory.BAD_REQUEST
    return ErrorCategory.TRANSIENT


class ChatProvider(Protocol):
    """A vendor adapter for one configured model.

    `stream` is an async iterator of deltas (it raises `ProviderError`, and when
    the consumer stops iterating it closes the upstream connection); `complete`
    returns the whole answer.
    """

    provider_id: str
    model_name: str
    continues: bool
    """Capability: `stream` honours `ChatParams.continuation` (DESIGN section 8)."""

    def stream(self, params: ChatParams) -> AsyncIterator[ChatDelta]:
        """Yield the answer's pieces; the last carries `finish_reason`."""
        ...

    async def complete(self, params: ChatParams) -> ChatResult:
        """Return the whole answer at once."""
        ...

    async def aclose(self) -> None:
        """Release whatever the adapter holds (sessions, threads)."""
        ...
