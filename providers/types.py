"""The shapes every chat provider adapter speaks, independent of any vendor.

Flow: a `ChatParams` (messages + merged params, and the request's `tools` and
`tool_choice`) goes into an adapter; a stream of `ChatDelta` comes out (the last one
carries `finish_reason`). The router assembles a whole answer (`ChatResult`) from
the stream; adapters have no non-streaming call.

Tools and images (the common form is OpenAI's, every adapter translates it both
ways): a `ToolSpec` declares a function; an assistant `Message` may carry the
`ToolCall`s it made, a `tool` message carries one call's result under
`tool_call_id`; a user message with images has `parts` (text and `ImagePart`s in
order). Adapters stream tool calls as `ToolCallDelta` fragments keyed by `index`
(vendors that send whole calls send one fragment holding all of it); the router
assembles and holds them, so adapters never do. Vendor failures leave an adapter only as
`ProviderError`, classified once, with `retryable` and a `category`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

FinishReason = Literal[
    "complete", "max_tokens", "content_filtered", "cancelled", "error", "other", "tool_calls"
]
"""`tool_calls`: the model stopped to call tools (Glide's surfaces show it as `other`)."""

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class TextPart:
    """A run of text inside a message whose content has images."""

    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a user message: inline bytes (`data` + `media_type`, decoded
    from a `data:` URL) or an https `url` for vendors that fetch URLs themselves.
    `detail` is OpenAI's hint (`auto`, `low`, `high`), passed where a vendor has it."""

    media_type: str | None = None
    data: bytes | None = None
    url: str | None = None
    detail: str | None = None

    def base64(self) -> str:
        """The inline bytes as base64 text (empty for a URL image)."""
        import base64

        return base64.b64encode(self.data or b"").decode("ascii")

    def as_url(self) -> str:
        """The image as a URL: the https URL, or a `data:` URL of the inline bytes."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.base64()}"


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: `parameters` is a JSON schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    strict: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The tool in OpenAI's form (`{"type": "function", "function": {...}}`)."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description is not None:
            function["description"] = self.description
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`auto`, `none`, `required`, or `function` with the one `name` to call."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None

    def to_json(self) -> str | dict[str, Any]:
        """OpenAI's form: the mode string, or `{"type": "function", ...}` for one function."""
        if self.mode == "function":
            return {"type": "function", "function": {"name": self.name}}
        return self.mode


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One complete call the model made: `arguments` is JSON text (an object)."""

    id: str
    name: str
    arguments: str

    def to_json(self) -> dict[str, Any]:
        """The call in OpenAI's form."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A streamed piece of tool call number `index` of this answer: the first
    piece of a call carries `id` and `name`, every piece may add `arguments` text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message: `role` is system, user, assistant or tool.

    `content` is always the message's whole text (may be empty for an assistant
    message that only calls tools). `parts` is set only when the content has
    images: the text and image parts in order. An assistant message lists the
    `tool_calls` it made; a `tool` message answers the call `tool_call_id`.
    """

    role: str
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    parts: tuple[ContentPart, ...] = ()

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The message's images, in order."""
        return tuple(part for part in self.parts if isinstance(part, ImagePart))

    def to_json(self) -> dict[str, Any]:
        """The message as OpenAI's chat API takes it (what most vendors accept)."""
        content: Any = self.content
        if self.parts:
            content = [
                {"type": "text", "text": part.text}
                if isinstance(part, TextPart)
                else {"type": "image_url", "image_url": _image_url_json(part)}
                for part in self.parts
            ]
        elif self.tool_calls and not self.content:
            content = None
        out: dict[str, Any] = {"role": self.role, "content": content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [call.to_json() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


def _image_url_json(part: ImagePart) -> dict[str, Any]:
    out: dict[str, Any] = {"url": part.as_url()}
    if part.detail is not None:
        out["detail"] = part.detail
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
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts in Glide's names."""

    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """One streamed piece of an answer. The last piece has `finish_reason` set.

    From an adapter, `tool_calls` holds raw fragments; after the router's
    assembly, each is one whole call (id, name and complete arguments)."""

    content: str
    finish_reason: FinishReason | None = None
    usage: TokenUsage | None = None
    metadata: dict[str, str] | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A whole answer, assembled by the router from an adapter's stream."""

    content: str
    finish_reason: FinishReason
    usage: TokenUsage
    role: str = "assistant"
    metadata: dict[str, str] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()


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
    the consumer stops iterating it closes the upstream connection). There is no
    non-streaming call: `ChatRouter.complete` assembles whole answers from `stream`.
    """

    provider_id: str
    model_name: str
    continues: bool
    """Capability: `stream` honours `ChatParams.continuation` (DESIGN section 8)."""
    tools: bool
    """Capability: the adapter translates `ChatParams.tools`, tool calls and results."""
    images: bool
    """Capability: the adapter translates inline image parts (`ImagePart.data`)."""
    image_urls: bool
    """Capability: the vendor fetches https image URLs itself (`ImagePart.url`)."""

    def stream(self, params: ChatParams) -> AsyncIterator[ChatDelta]:
        """Yield the answer's pieces; the last carries `finish_reason`."""
        ...

    async def aclose(self) -> None:
        """Release whatever the adapter holds (sessions, threads)."""
        ...
