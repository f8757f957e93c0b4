"""The Anthropic Messages API adapter (`POST {base_url}/v1/messages`).

Flow: `ChatParams` in; system messages become the top-level `system` field and
the rest alternate user/assistant in `messages`; `ChatDelta`s out of the SSE
stream (`message_start` ... `content_block_delta` ... `message_delta`,
`message_stop`), or one `ChatResult` from the non-streaming call. Every vendor
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
from providers.types import (
    ChatDelta,
    ChatParams,
    ChatResult,
    ErrorCategory,
    FinishReason,
    Message,
    ProviderError,
    TokenUsage,
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


def split_messages(messages: tuple[Message, ...]) -> tuple[str | None, list[dict[str, Any]]]:
    """Turn our messages into Anthropic's `system` and `messages` fields.

    In: messages with roles system, user, assistant (any other role is sent as
    user). Out: the system prompt (several joined by blank lines; None when
    there is none) and the turns, consecutive same-role turns merged with a
    blank line between them because the API requires alternation. `name` has
    no place in the Messages API and is dropped.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = f"{turns[-1]['content']}\n\n{message.content}"
        else:
            turns.append({"role": role, "content": message.content})
    return ("\n\n".join(system) if system else None), turns


def prefill(partial: str) -> str:
    """The prefill for a partial answer: Anthropic rejects a final assistant message
    that ends in whitespace, so trailing whitespace is cut (and the continuation's
    leading whitespace dropped in turn, see `AnthropicProvider.stream`)."""
    return partial.rstrip()


class AnthropicProvider:
    """A chat provider for one Claude model over the Anthropic Messages API.

    In: the model's `AnthropicConfig`, its `ClientConfig` and the app's shared
    `aiohttp.ClientSession`. Out: `stream` and `complete` per the
    `ChatProvider` protocol; requests carry `x-api-key` and `anthropic-version`.

    Continues a partial answer natively (`continues`): it becomes the trailing
    assistant message (a prefill) and the instruction, if any, is appended to the
    request's system prompt after a blank line.
    """

    continues = True
    tools = False  # capabilities: see providers.types.ChatProvider
    images = False
    image_urls = False

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

    def request_body(self, params: ChatParams, *, stream: bool) -> dict[str, Any]:
        """The JSON body for `params`.

        Default params overridden by the request's (an OpenAI-style `stop` becomes
        `stop_sequences` unless those are given), then `model`, `messages`, `stream`
        and, when the messages hold any, `system` — which nothing overrides.
        `max_tokens` is always present (the API requires it).
        """
        body: dict[str, Any] = {**self._default_params, **params.params}
        for key in _PROTECTED:
            body.pop(key, None)
        stop = body.pop("stop", None)
        if stop is not None and "stop_sequences" not in body:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        body.setdefault("max_tokens", FALLBACK_MAX_TOKENS)
        system, turns = split_messages(params.messages)
        continuation = params.continuation
        if continuation is not None:
            if continuation.instruction:
                parts = [system, continuation.instruction] if system else [continuation.instruction]
                system = "\n\n".join(parts)
            text = prefill(continuation.partial)
            if text:
                if turns and turns[-1]["role"] == "assistant":
                    turns[-1] = {"role": "assistant", "content": f"{turns[-1]['content']}{text}"}
                else:
                    turns.append({"role": "assistant", "content": text})
        body["model"] = self.model_name
        if system is not None:
            body["system"] = system
        body["messages"] = turns
        if stream:
            body["stream"] = True
        return body

    async def stream(self, params: ChatParams) -> AsyncGenerator[ChatDelta, None]:
        """Stream one answer.

        In: `params`. Out: a `ChatDelta` per non-empty `text_delta`, then, after
        `message_stop`, one `ChatDelta("", finish_reason, usage)`. Thinking,
        signature and tool-input deltas and `ping`s are skipped. Raises
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
        # the prefill lost its trailing whitespace, which the client already has
        continuation = params.continuation
        trim = continuation is not None and prefill(continuation.partial) != continuation.partial
        try:
            async with self._session.post(
                self._url,
                json=self.request_body(params, stream=True),
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
                            text = _text_of(obj.get("delta"), "text_delta")
                            if trim and text:
                                text = text.lstrip()
                                trim = not text
                            if text:
                                produced = True
                                yield ChatDelta(text)
                        elif kind == "content_block_start":
                            text = _text_of(obj.get("content_block"), "text")
                            if trim and text:
                                text = text.lstrip()
                                trim = not text
                            if text:
                                produced = True
                                yield ChatDelta(text)
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
                        # ping, content_block_stop and event types added later: nothing to do
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
        reason = _stop_reason(stop_reason)
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

    async def complete(self, params: ChatParams) -> ChatResult:
        """One non-streamed answer.

        In: `params`. Out: a `ChatResult` (the text blocks joined, the mapped
        stop reason, usage, and `response_id` metadata). Raises `ProviderError`;
        an answer without text is EMPTY_OUTPUT unless it was a refusal.
        """
        try:
            async with self._session.post(
                self._url,
                json=self.request_body(params, stream=False),
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raise await error_from_response(resp, self._label, secrets=self._secrets)
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc

        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: response body is not JSON"
            ) from exc
        if not isinstance(obj, dict):
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: response body is not a JSON object"
            )
        if obj.get("type") == "error":
            raise self._event_error(obj.get("error"))
        blocks = obj.get("content")
        if not isinstance(blocks, list):
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: response has no content list"
            )
        text = "".join(_text_of(block, "text") for block in blocks)
        raw_reason = obj.get("stop_reason")
        reason = _stop_reason(raw_reason) if isinstance(raw_reason, str) else "other"
        if not text and reason != "content_filtered":
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        counts: dict[str, int] = {}
        _merge_usage(counts, obj.get("usage"))
        ident = obj.get("id")
        role = obj.get("role")
        return ChatResult(
            content=text,
            finish_reason=reason,
            usage=_token_usage(counts),
            role=role if isinstance(role, str) and role else "assistant",
            metadata={"response_id": ident} if isinstance(ident, str) and ident else {},
        )

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is shared and owned by the app."""


def _text_of(block: Any, kind: str) -> str:
    """The `text` of a content block or delta of type `kind`, else ""."""
    if isinstance(block, dict) and block.get("type") == kind:
        text = block.get("text")
        if isinstance(text, str):
            return text
    return ""
