"""What the vendor adapters share when they translate tool calls and images.

Flow: our common form (`ToolCall.arguments` as JSON text, `ImagePart`s, `tool`
messages answering a call id) goes in; the pieces each vendor's format needs come
out: arguments as a JSON object, the function name a result answers (Gemini and
Ollama key results by name, not id), base64 text of an inline image, and the
`ProviderError(BAD_REQUEST)` that names the vendor when a request holds something
it cannot carry (an https image URL, a `tool_choice` mode it lacks).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from providers.types import (
    ErrorCategory,
    FinishReason,
    ImagePart,
    Message,
    ProviderError,
    ToolCall,
)

OPENAI_ONLY_PARAMS = ("parallel_tool_calls",)
"""OpenAI tool params that are no field of these vendors' requests: adapters pop them
(Anthropic turns `parallel_tool_calls: false` into `disable_parallel_tool_use`)."""


def bad_request(label: str, message: str) -> ProviderError:
    """The final (non-retryable) error for a request this model cannot take, naming
    the model as `provider/model` in its message."""
    return ProviderError(ErrorCategory.BAD_REQUEST, f"{label}: {message}")


def arguments_object(call: ToolCall, label: str) -> dict[str, Any]:
    """A call's arguments (JSON text) as the JSON object vendors want in history.

    Empty text is `{}` (OpenAI sends that for a function without parameters).
    Raises `ProviderError(BAD_REQUEST)` when the text is not a JSON object.
    """
    text = call.arguments.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise bad_request(
            label, f"tool call {call.id!r} ({call.name}) has arguments that are not JSON"
        ) from exc
    if not isinstance(value, dict):
        raise bad_request(
            label, f"tool call {call.id!r} ({call.name}) has arguments that are not a JSON object"
        )
    return value


def arguments_text(value: Any) -> str:
    """A vendor's arguments object as our JSON text (`{}` when the vendor sent none)."""
    if value is None or value == "":
        return "{}"
    if isinstance(value, str):
        return value  # already JSON text (Cohere, OpenAI-like vendors)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def tool_names(messages: Iterable[Message]) -> dict[str, str]:
    """Each call id of the conversation's assistant messages -> that call's function name."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.tool_calls:
            names[call.id] = call.name
    return names


def result_name(message: Message, names: Mapping[str, str], label: str, vendor: str) -> str:
    """The function a `tool` message answers (for vendors that key results by name).

    Raises `ProviderError(BAD_REQUEST)` when no earlier assistant message made the
    call `message.tool_call_id`.
    """
    name = names.get(message.tool_call_id or "")
    if name is None:
        raise bad_request(
            label,
            f"{vendor} needs the function name of tool result {message.tool_call_id!r}, "
            "but no assistant message before it made that call",
        )
    return name


MEDIA_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
"""Spellings clients put in data: URLs for types the vendors know by another name."""


def media_type_of(part: ImagePart) -> str:
    """An inline image's media type, lower case, with `image/jpg` read as `image/jpeg`."""
    media_type = (part.media_type or "").lower()
    return MEDIA_TYPE_ALIASES.get(media_type, media_type)


def inline_image(
    part: ImagePart, label: str, vendor: str, media_types: Collection[str] | None = None
) -> tuple[str, str]:
    """(media type, base64 text) of an inline image for a vendor without URL support.

    `media_types` (lowercase), when given, are the types the vendor accepts. Raises
    `ProviderError(BAD_REQUEST)` for an https URL image or an unsupported type.
    """
    if part.data is None:
        raise bad_request(
            label,
            f"{vendor} does not fetch image URLs: send the image inline as a data: URL",
        )
    media_type = media_type_of(part)
    if media_types is not None and media_type not in media_types:
        raise bad_request(
            label,
            f"{vendor} does not take images of type {media_type or 'unknown'!r} "
            f"(it takes {', '.join(sorted(media_types))})",
        )
    return media_type, part.base64()


def tools_finish(
    reason: FinishReason, vendor_stopped_for_tools: bool, called: bool
) -> FinishReason:
    """The finish reason of an answer that may have called tools: `tool_calls` when
    the vendor says it stopped for tools (or stopped normally) and calls were made;
    otherwise the vendor's own mapped `reason`."""
    if called and (vendor_stopped_for_tools or reason == "complete"):
        return "tool_calls"
    return reason
