"""The Anthropic Messages API adapter (`POST {base_url}/v1/messages`).

Flow: `ChatParams` in; system messages become the top-level `system` field and
the rest alternate user/assistant in `messages`; `ChatDelta`s out of the SSE
stream (`message_start` ... `content_block_delta` ... `message_delta`,
`message_stop`).

Tools and images: `ChatParams.tools` become `tools` (name, description,
input_schema) and `tool_choice` (auto / any / tool / none); an assistant's calls
become `tool_use` blocks, `tool` messages `tool_result` blocks in a user turn
(consecutive results share one turn); images become `image` blocks with a base64
or `url` source. A streamed `tool_use` block comes out as a `ToolCallDelta` with
id and name, its `input_json_delta`s as argument fragments, keyed by a call index
counted from 0 per answer; stop_reason `tool_use` finishes with `tool_calls`. Every vendor
failure leaves as a `ProviderError`: HTTP errors by status (529 overloaded is
transient), mid-stream `error` events by their `error.type`. Deadlines beyond
connecting belong to the Rx operators around the provider, as for OpenAI.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp

from config.models import AnthropicConfig, ClientConfig
from providers.http_errors import error_from_exception, error_from_response, redact
from providers.sse import SSEDecoder, read_sse_event
from providers.tool_wire import (
    OPENAI_ONLY_PARAMS,
    arguments_object,
    bad_request,
    media_type_of,
    tools_finish,
)
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    FinishReason,
    ImagePart,
    Message,
    ProviderError,
    TextPart,
    TokenUsage,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
)

STOP_REASONS: Mapping[str, FinishReason] = MappingProxyType(
    {
        "end_turn": "complete",
        "stop_sequence": "complete",
        "max_tokens": "max_tokens",
        "model_context_window_exceeded": "max_tokens",
        "refusal": "content_filtered",
        "tool_use": "other",
        "pause_turn": "other",
    }
)

ERROR_TYPES: Mapping[str, ErrorCategory] = MappingProxyType(
    {
        "overloaded_error": ErrorCategory.TRANSIENT,
        "api_error": ErrorCategory.TRANSIENT,
        "rate_limit_error": ErrorCategory.RATE_LIMITED,
        "invalid_request_error": ErrorCategory.BAD_REQUEST,
        "request_too_large": ErrorCategory.BAD_REQUEST,
        "not_found_error": ErrorCategory.BAD_REQUEST,
        "authentication_error": ErrorCategory.AUTH,
        "permission_error": ErrorCategory.AUTH,
        "billing_error": ErrorCategory.AUTH,
        "timeout_error": ErrorCategory.TIMEOUT,
    }
)

# The API requires max_tokens; the config default carries it, this covers a
# config whose default_params dropped it.
FALLBACK_MAX_TOKENS = 1024

# Keys the adapter owns: a request's params never override them.
_PROTECTED = ("model", "messages", "stream")

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""The image media types the Messages API takes."""

TOOL_CHOICES: Mapping[str, str] = MappingProxyType(
    {"auto": "auto", "required": "any", "function": "tool", "none": "none"}
)

_USAGE_KEYS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def _stop_reason(raw: str) -> FinishReason:
    return STOP_REASONS.get(raw, "other")


def _merge_usage(counts: dict[str, int], raw: Any) -> None:
    """Fold one usage object into `counts` (later values replace earlier ones:
    Anthropic's counts are cumulative)."""
    if not isinstance(raw, dict):
        return
    for key in _USAGE_KEYS:
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            counts[key] = value


def _token_usage(counts: Mapping[str, int]) -> TokenUsage:
    # input_tokens excludes prompt-cache reads and writes; the prompt is all three.
    prompt = (
        counts.get("input_tokens", 0)
        + counts.get("cache_creation_input_tokens", 0)
        + counts.get("cache_read_input_tokens", 0)
    )
    response = counts.get("output_tokens", 0)
    return TokenUsage(
        prompt_tokens=prompt, response_tokens=response, total_tokens=prompt + response
    )


def split_messages(
    messages: tuple[Message, ...], label: str = "anthropic"
) -> tuple[str | None, list[dict[str, Any]]]:
    """Turn our messages into Anthropic's `system` and `messages` fields.

    In: messages with roles system, user, assistant and tool (a `tool` message
    without a `tool_call_id`, or any other role, is sent as user text). Out: the
    system prompt (several joined by blank lines; None when there is none) and the
    turns. Plain text stays a string; images, tool calls and tool results make a
    turn a list of blocks (`image`, `tool_use`, `tool_result`). Consecutive
    same-role turns are merged (text joined by a blank line, blocks concatenated,
    a user turn's `tool_result` blocks kept first) because the API requires
    alternation. `name` has no place in the Messages API and is dropped. Raises
    `ProviderError(BAD_REQUEST)` for an image type the API does not take or tool
    call arguments that are not a JSON object.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        content = _content(message, label)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _merge(turns[-1]["content"], content)
        else:
            turns.append({"role": role, "content": content})
    return ("\n\n".join(system) if system else None), turns


def _content(message: Message, label: str) -> str | list[dict[str, Any]]:
    """One message's content: its text, or its blocks when it has more than text."""
    if message.role == "tool" and message.tool_call_id is not None:
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            result["content"] = message.content
        return [result]
    if message.role == "assistant" and message.tool_calls:
        blocks: list[dict[str, Any]] = []
        if message.content:
            blocks.append({"type": "text", "text": message.content})
        for call in message.tool_calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": arguments_object(call, label),
                }
            )
        return blocks
    if message.parts:
        out: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                if part.text:
                    out.append({"type": "text", "text": part.text})
            else:
                out.append(_image_block(part, label))
        return out
    return message.content


def _image_block(part: ImagePart, label: str) -> dict[str, Any]:
    if part.data is None:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    media_type = media_type_of(part)
    if media_type not in IMAGE_TYPES:
        raise bad_request(
            label,
            f"Anthropic does not take images of type {media_type or 'unknown'!r} "
            f"(it takes {', '.join(sorted(IMAGE_TYPES))})",
        )
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": part.base64()},
    }


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _merge(
    first: str | list[dict[str, Any]], second: str | list[dict[str, Any]]
) -> str | list[dict[str, Any]]:
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}\n\n{second}"
    blocks = [*_blocks(first), *_blocks(second)]
    # the API wants a user turn's tool results before anything else in it
    results = [b for b in blocks if b.get("type") == "tool_result"]
    return [*results, *(b for b in blocks if b.get("type") != "tool_result")]


def tools_json(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    """Our tool specs as Anthropic's `tools` (name, description, input_schema; an
    empty schema becomes an object schema without properties)."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        schema = dict(tool.parameters) if tool.parameters else {"properties": {}}
        schema.setdefault("type", "object")
        spec: dict[str, Any] = {"name": tool.name, "input_schema": schema}
        if tool.description:
            spec["description"] = tool.description
        out.append(spec)
    return out


def tool_choice_json(choice: ToolChoice | None, parallel: Any) -> dict[str, Any] | None:
    """Our tool choice (and OpenAI's `parallel_tool_calls`) as Anthropic's `tool_choice`:
    auto, any (required), tool (one function) or none; `parallel_tool_calls: false`
    becomes `disable_parallel_tool_use`. None when both are unset."""
    if choice is None and parallel is not False:
        return None
    mode = choice.mode if choice is not None else "auto"
    out: dict[str, Any] = {"type": TOOL_CHOICES[mode]}
    if mode == "function" and choice is not None:
        out["name"] = choice.name
    if parallel is False and mode != "none":
        out["disable_parallel_tool_use"] = True
    return out


def prefill(partial: str) -> str:
    """The prefill for a partial answer: Anthropic rejects a final assistant message
    that ends in whitespace, so trailing whitespace is cut (and the continuation's
    leading whitespace dropped in turn, see `AnthropicProvider.stream`)."""
    return partial.rstrip()


class AnthropicProvider:
    """A chat provider for one Claude model over the Anthropic Messages API.

    In: the model's `AnthropicConfig`, its `ClientConfig` and the app's shared
    `aiohttp.ClientSession`. Out: `stream` per the
    `ChatProvider` protocol; requests carry `x-api-key` and `anthropic-version`.

    Continues a partial answer natively (`continues`): it becomes the trailing
    assistant message (a prefill) and the instruction, if any, is appended to the
    request's system prompt after a blank line.
    """

    continues = True
    tools = True  # capabilities: see providers.types.ChatProvider
    images = True
    image_urls = True
    """The adapter targets anthropic-version 2023-06-01, whose Messages API takes a
    `url` image source (Anthropic fetches the image)."""

    def __init__(
        self,
        config: AnthropicConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "anthropic",
    ) -> None:
        key = config.api_key.get_secret_value()
        self.provider_id = provider_id
        self.model_name = config.model
        self._url = f"{config.base_url.rstrip('/')}{config.chat_endpoint}"
        self._headers = {"x-api-key": key, "anthropic-version": config.api_version}
        self._default_params = dict(config.default_params)
        self._session = session
        self._secrets = (key,) if key else ()
        self._label = f"{provider_id}/{config.model}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout)

    def request_body(self, params: ChatParams) -> dict[str, Any]:
        """The JSON body for `params`.

        Default params overridden by the request's (an OpenAI-style `stop` becomes
        `stop_sequences` unless those are given), then `model`, `messages`, `stream`
        and, when the messages hold any, `system` — which nothing overrides.
        `max_tokens` is always present (the API requires it). `ChatParams.tools`
        and `tool_choice`, when given, replace any `tools` / `tool_choice` params.
        """
        body: dict[str, Any] = {**self._default_params, **params.params}
        for key in _PROTECTED:
            body.pop(key, None)
        parallel = body.pop("parallel_tool_calls", None)
        for key in OPENAI_ONLY_PARAMS:
            body.pop(key, None)
        if params.tools:
            body["tools"] = tools_json(params.tools)
            choice = tool_choice_json(params.tool_choice, parallel)
            if choice is not None:
                body["tool_choice"] = choice
        stop = body.pop("stop", None)
        if stop is not None and "stop_sequences" not in body:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        body.setdefault("max_tokens", FALLBACK_MAX_TOKENS)
        system, turns = split_messages(params.messages, self._label)
        continuation = params.continuation
        if continuation is not None:
            if continuation.instruction:
                parts = [system, continuation.instruction] if system else [continuation.instruction]
                system = "\n\n".join(parts)
            text = prefill(continuation.partial)
            if text:
                if turns and turns[-1]["role"] == "assistant":
                    last = turns[-1]["content"]
                    content: Any = (
                        f"{last}{text}"
                        if isinstance(last, str)
                        else [*last, {"type": "text", "text": text}]
                    )
                    turns[-1] = {"role": "assistant", "content": content}
                else:
                    turns.append({"role": "assistant", "content": text})
        body["model"] = self.model_name
        if system is not None:
            body["system"] = system
        body["messages"] = turns
        body["stream"] = True
        return body

    async def stream(self, params: ChatParams) -> AsyncGenerator[ChatDelta, None]:
        """Stream one answer.

        In: `params`. Out: a `ChatDelta` per non-empty `text_delta`; per `tool_use`
        block a `ChatDelta` whose `tool_calls` holds the call's index, id and name,
        then one per `input_json_delta` with an arguments fragment (`{}` for a call
        that streamed no input); then, after `message_stop`, one `ChatDelta("",
        finish_reason, usage)` (`tool_calls` when the model stopped to call tools).
        Thinking and signature deltas and `ping`s are skipped. Raises
        `ProviderError` (HTTP errors by status; an `error` event by its type;
        PROTOCOL for a malformed stream or one without `message_stop` or a
        stop reason; EMPTY_OUTPUT when a complete answer had no text). Closing
        the generator or cancelling its consumer closes the HTTP response.

            vendor:  -start-"Hel"-"lo"-delta(end_turn)-stop|
            out:     -------"Hel"-"lo"------------------final|
        """
        headers = {**self._headers, "Accept": "text/event-stream"}
        counts: dict[str, int] = {}
        stop_reason: str | None = None
        metadata: dict[str, str] = {}
        produced = False
        done = False
        calls: dict[int, int] = {}  # content block index -> tool call index
        argued: set[int] = set()  # tool calls whose arguments have begun
        # the prefill lost its trailing whitespace, which the client already has
        continuation = params.continuation
        trim = continuation is not None and prefill(continuation.partial) != continuation.partial
        try:
            async with self._session.post(
                self._url,
                json=self.request_body(params),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raise await error_from_response(resp, self._label, secrets=self._secrets)
                decoder = SSEDecoder()
                try:
                    while (event := await read_sse_event(resp.content, decoder)) is not None:
                        if not event.data.strip():
                            continue
                        obj = self._parse_event(event.data)
                        kind = obj.get("type")
                        if not isinstance(kind, str):
                            kind = event.event
                        if kind == "content_block_delta":
                            delta = obj.get("delta")
                            if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                                fragment = _tool_fragment(obj.get("index"), delta, calls)
                                if fragment is not None:
                                    argued.add(fragment.index)
                                    yield ChatDelta("", tool_calls=(fragment,))
                                continue
                            text = _text_of(delta, "text_delta")
                            if trim and text:
                                text = text.lstrip()
                                trim = not text
                            if text:
                                produced = True
                                yield ChatDelta(text)
                        elif kind == "content_block_start":
                            block = obj.get("content_block")
                            start = _tool_start(obj.get("index"), block, calls)
                            if start is not None:
                                produced = True
                                yield ChatDelta("", tool_calls=(start,))
                                continue
                            text = _text_of(block, "text")
                            if trim and text:
                                text = text.lstrip()
                                trim = not text
                            if text:
                                produced = True
                                yield ChatDelta(text)
                        elif kind == "content_block_stop":
                            block_index = obj.get("index")
                            call = calls.get(block_index) if isinstance(block_index, int) else None
                            if call is not None and call not in argued:
                                # a call without parameters streams no input: its input is {}
                                argued.add(call)
                                yield ChatDelta(
                                    "", tool_calls=(ToolCallDelta(call, None, None, "{}"),)
                                )
                        elif kind == "message_start":
                            message = obj.get("message")
                            if isinstance(message, dict):
                                _merge_usage(counts, message.get("usage"))
                                ident = message.get("id")
                                if isinstance(ident, str) and ident:
                                    metadata["response_id"] = ident
                        elif kind == "message_delta":
                            delta = obj.get("delta")
                            if isinstance(delta, dict):
                                reason = delta.get("stop_reason")
                                if isinstance(reason, str) and reason:
                                    stop_reason = reason
                            _merge_usage(counts, obj.get("usage"))
                        elif kind == "message_stop":
                            done = True
                            break
                        elif kind == "error":
                            raise self._event_error(obj.get("error"))
                        # ping and event types added later: nothing to do
                finally:
                    if not done:
                        resp.close()  # abandoned or broken: drop the connection, never reuse it
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc

        if not done:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream ended before message_stop"
            )
        if stop_reason is None:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream ended without a stop_reason"
            )
        reason = tools_finish(_stop_reason(stop_reason), stop_reason == "tool_use", bool(calls))
        if not produced and reason != "content_filtered":
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        yield ChatDelta(
            "", finish_reason=reason, usage=_token_usage(counts), metadata=metadata or None
        )

    def _parse_event(self, data: str) -> dict[str, Any]:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise ProviderError(
                ErrorCategory.PROTOCOL,
                f"{self._label}: stream event is not JSON: {redact(data[:200], self._secrets)!r}",
            ) from exc
        if not isinstance(obj, dict):
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream event is not a JSON object"
            )
        return obj

    def _event_error(self, error: Any) -> ProviderError:
        """An error Anthropic reported inside a 200 response (`event: error`)."""
        if isinstance(error, dict):
            kind = str(error.get("type") or "")
            message = str(error.get("message") or kind or "unknown error")
        else:
            kind, message = "", str(error)
        category = ERROR_TYPES.get(kind, ErrorCategory.TRANSIENT)
        detail = f"{kind}: {message}" if kind and kind not in message else message
        return ProviderError(category, f"{self._label}: {redact(detail, self._secrets)}")

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is shared and owned by the app."""


def _text_of(block: Any, kind: str) -> str:
    """The `text` of a content block or delta of type `kind`, else ""."""
    if isinstance(block, dict) and block.get("type") == kind:
        text = block.get("text")
        if isinstance(text, str):
            return text
    return ""


def _tool_start(block_index: Any, block: Any, calls: dict[int, int]) -> ToolCallDelta | None:
    """The first fragment of a `tool_use` block that starts at `block_index`, which
    is given the next call index; None for any other block."""
    if not isinstance(block, dict) or block.get("type") != "tool_use":
        return None
    if not isinstance(block_index, int):
        block_index = -1 - len(calls)
    index = len(calls)
    calls[block_index] = index
    name = block.get("name")
    return ToolCallDelta(
        index, str(block.get("id") or f"toolu_{index}"), name if isinstance(name, str) else ""
    )


def _tool_fragment(
    block_index: Any, delta: dict[str, Any], calls: dict[int, int]
) -> ToolCallDelta | None:
    """An `input_json_delta` of a known tool_use block as an arguments fragment; None
    when it is empty (Anthropic may open a call's input with "") or its block unknown."""
    index = calls.get(block_index) if isinstance(block_index, int) else None
    fragment = delta.get("partial_json")
    if index is None or not isinstance(fragment, str) or not fragment:
        return None
    return ToolCallDelta(index, arguments=fragment)
