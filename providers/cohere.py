"""The Cohere chat adapter, for both of Cohere's chat APIs.

Flow: `ChatParams` in; a POST to `{base_url}{chat_endpoint}` in the v2 or v1 shape
(`CohereConfig.api`) with `Authorization: Bearer <key>`; `ChatDelta`s out of the
stream. Every failure leaves as a `ProviderError`. Deadlines beyond connecting
belong to the Rx operators around the provider; they stop iterating, which closes
the upstream response at once.

v2 streams server-sent events named by `type`; `message-end` is the terminator and
carries the finish reason and usage:

    vendor:  -message-start-content-start-delta"Hi"-delta"!"-content-end-message-end|
    out:     ----------------------------"Hi"------"!"----------------------final|

v1 streams JSON lines (no SSE) named by `event_type`; `stream-end` is the terminator:

    vendor:  -stream-start-text-generation"Hi"-text-generation"!"-stream-end|
    out:     --------------"Hi"----------------"!"----------------final|

Tools and images (v2 only; the v1 mode declares neither): `ChatParams.tools` go as
`tools` in the OpenAI-like function shape and `tool_choice` as REQUIRED / NONE (one
named function: only that tool is sent, REQUIRED); an assistant's calls become
`tool_calls` (its text the `tool_plan`), `tool` messages `{role: tool,
tool_call_id, content}`; images become `image_url` content parts (data: or https
URLs, with `detail`). Streamed `tool-call-start` / `tool-call-delta` come out as
`ToolCallDelta` fragments keyed by a call index counted from 0 per answer, and the
`tool_plan` (the model's words before calling) streams as text; TOOL_CALL finishes
with `tool_calls`.

Cohere's finish reasons map to ours (COMPLETE/STOP_SEQUENCE -> complete,
MAX_TOKENS/ERROR_LIMIT -> max_tokens, ERROR_TOXIC/CONTENT_BLOCKED ->
content_filtered, TOOL_CALL -> tool_calls when calls came, the rest -> other),
except that ERROR raises a TRANSIENT `ProviderError` (the generation failed) and
TIMEOUT a TIMEOUT one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from types import MappingProxyType
from typing import Any

import aiohttp

from config.models import ClientConfig, CohereConfig
from providers.http_errors import error_from_exception, error_from_response, redact
from providers.ndjson import JSONLinesReader
from providers.sse import SSEDecoder, read_sse_event
from providers.tool_wire import OPENAI_ONLY_PARAMS, bad_request, tools_finish
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    FinishReason,
    Message,
    ProviderError,
    TextPart,
    TokenUsage,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
)

FINISH_REASONS: Mapping[str, FinishReason] = MappingProxyType(
    {
        "COMPLETE": "complete",
        "STOP_SEQUENCE": "complete",
        "MAX_TOKENS": "max_tokens",
        "ERROR_LIMIT": "max_tokens",  # v1: the reply hit the model's context length
        "ERROR_TOXIC": "content_filtered",
        "CONTENT_BLOCKED": "content_filtered",
        "TOOL_CALL": "other",
    }
)

FAILED_REASONS: Mapping[str, ErrorCategory] = MappingProxyType(
    {"ERROR": ErrorCategory.TRANSIENT, "TIMEOUT": ErrorCategory.TIMEOUT}
)
"""Finish reasons that mean the generation failed rather than finished."""

PARAM_ALIASES: Mapping[str, str] = MappingProxyType(
    {"top_p": "p", "top_k": "k", "stop": "stop_sequences"}
)
"""OpenAI-style param names and Cohere's own; Cohere's name wins when both are given."""

V1_ROLES: Mapping[str, str] = MappingProxyType(
    {"user": "USER", "assistant": "CHATBOT", "chatbot": "CHATBOT"}
)

INVALID_TOKEN_STATUS = 498
"""Cohere's own status for an invalid or expired API key."""

_PROTECTED_V2 = frozenset({"model", "messages", "stream", *OPENAI_ONLY_PARAMS})
_PROTECTED_V1 = frozenset({"model", "message", "chat_history", "stream", *OPENAI_ONLY_PARAMS})


def _number(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def _usage(*candidates: Any) -> TokenUsage | None:
    """Token counts from the first of `candidates` (billed_units, tokens) that is an object."""
    for raw in candidates:
        if isinstance(raw, dict):
            prompt, response = _number(raw, "input_tokens"), _number(raw, "output_tokens")
            return TokenUsage(
                prompt_tokens=prompt, response_tokens=response, total_tokens=prompt + response
            )
    return None


def _v2_usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict):
        return None
    return _usage(raw.get("billed_units"), raw.get("tokens"))


def _v1_usage(meta: Any) -> TokenUsage | None:
    if not isinstance(meta, dict):
        return None
    return _usage(meta.get("billed_units"), meta.get("tokens"))


def _merge_params(defaults: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overridden by the request, with OpenAI-style names spelled Cohere's way."""
    merged: dict[str, Any] = {**defaults, **request}
    for alias, native in PARAM_ALIASES.items():
        if alias in merged:
            value = merged.pop(alias)
            merged.setdefault(native, value)
    stops = merged.get("stop_sequences")
    if isinstance(stops, str):
        merged["stop_sequences"] = [stops]
    return merged


class CohereProvider:
    """A Cohere chat model over the v2 (SSE) or v1 (JSON lines) chat API.

    In: the `CohereConfig` block (its `api` picks the wire format), the model's
    `ClientConfig` and the app's shared `aiohttp.ClientSession`. Out: `stream`
    per the `ChatProvider` protocol.
    """

    continues = False
    """Capability: this adapter cannot continue a partial answer (that hop restarts)."""
    tools = True  # capabilities (v2; a v1 instance declares none): see ChatProvider
    images = True
    image_urls = True  # v2 takes data: URLs and http(s) image URLs

    def __init__(
        self,
        config: CohereConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "cohere",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.api = config.api
        if self.api == "v1":
            self.tools = self.images = self.image_urls = False
        key = config.api_key.get_secret_value()
        self._url = f"{config.base_url.rstrip('/')}{config.chat_endpoint}"
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._secrets = (key,) if key else ()
        self._default_params = dict(config.default_params)
        self._session = session
        self._label = f"{provider_id}/{config.model}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout)

    # --- requests -----------------------------------------------------------------

    def request_body(self, params: ChatParams) -> dict[str, Any]:
        """The JSON body for `params` in the configured API's shape.

        Default params are overridden by the request's (`top_p`, `top_k` and `stop`
        are accepted for Cohere's `p`, `k` and `stop_sequences`). v2 sends
        `messages` as `{role, content}`; v1 sends the last message as `message`,
        the earlier ones as `chat_history` (USER / CHATBOT) and system messages
        joined as `preamble`. v2 carries tools, tool calls and results, and images
        (see the module doc). Raises `ProviderError(BAD_REQUEST)` when a v1
        conversation does not end with a user message, has an unknown role, tools
        or images.
        """
        merged = _merge_params(self._default_params, params.params)
        if self.api == "v1":
            if params.tools or any(m.tool_calls or m.images for m in params.messages):
                raise bad_request(
                    self._label,
                    "the Cohere v1 chat API mode carries no tool calls or images (use api: v2)",
                )
            return self._v1_body(merged, params.messages)
        body = {k: v for k, v in merged.items() if k not in _PROTECTED_V2}
        body["model"] = self.model_name
        body["messages"] = [_v2_message(m) for m in params.messages]
        if params.tools:
            tools, choice = _v2_tools(params.tools, params.tool_choice)
            body["tools"] = tools
            if choice is not None:
                body["tool_choice"] = choice
        body["stream"] = True
        return body

    def _v1_body(self, merged: dict[str, Any], messages: tuple[Message, ...]) -> dict[str, Any]:
        system = [m.content for m in messages if m.role == "system"]
        turns = [m for m in messages if m.role != "system"]
        if not turns or turns[-1].role != "user":
            raise ProviderError(
                ErrorCategory.BAD_REQUEST,
                f"{self._label}: Cohere v1 needs the conversation to end with a user message",
            )
        history: list[dict[str, str]] = []
        for turn in turns[:-1]:
            role = V1_ROLES.get(turn.role)
            if role is None:
                raise ProviderError(
                    ErrorCategory.BAD_REQUEST,
                    f"{self._label}: Cohere v1 has no chat role {turn.role!r}",
                )
            history.append({"role": role, "message": turn.content})
        body = {k: v for k, v in merged.items() if k not in _PROTECTED_V1}
        body["model"] = self.model_name
        body["message"] = turns[-1].content
        body["chat_history"] = history
        if system:
            body["preamble"] = "\n\n".join(system)
        body["stream"] = True
        return body

    # --- streaming ------------------------------------------------------------------

    async def stream(self, params: ChatParams) -> AsyncGenerator[ChatDelta, None]:
        """Stream one answer.

        In: `params`. Out: a `ChatDelta` per non-empty text piece, then, after the
        terminator (`message-end` / `stream-end`), one `ChatDelta("", finish_reason,
        usage)`. Raises `ProviderError`: by HTTP status for an error response
        (Cohere's 498 is AUTH); TRANSIENT or TIMEOUT for a generation that
        finished with ERROR or TIMEOUT; PROTOCOL for a malformed stream or one
        ending before its terminator; EMPTY_OUTPUT when a finished answer had no
        text (a content-filtered one excepted). Closing the generator or cancelling
        its consumer closes the HTTP response at once.
        """
        body = self.request_body(params)
        headers = dict(self._headers)
        if self.api == "v2":
            headers["Accept"] = "text/event-stream"
        end: dict[str, Any] | None = None
        produced = False
        called = False
        try:
            async with self._session.post(
                self._url,
                json=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raise await self._error(resp)
                events = self._v2_events(resp) if self.api == "v2" else self._v1_events(resp)
                try:
                    async with aclosing(events):
                        async for kind, payload in events:
                            if kind == "text":
                                produced = True
                                yield ChatDelta(str(payload))
                            elif isinstance(payload, ToolCallDelta):
                                produced = True
                                called = True
                                yield ChatDelta("", tool_calls=(payload,))
                            elif isinstance(payload, dict):
                                end = payload
                                break
                finally:
                    if end is None:
                        resp.close()  # abandoned or broken: drop the connection, never reuse it
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc

        terminator = "message-end" if self.api == "v2" else "stream-end"
        if end is None:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream ended before {terminator}"
            )
        if self.api == "v2":
            delta = end.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            raw = delta.get("finish_reason")
            reason = self._finish_reason(raw, delta.get("error"))
            reason = tools_finish(reason, str(raw).upper() == "TOOL_CALL", called)
            usage = _v2_usage(delta.get("usage"))
        else:
            response = end.get("response")
            response = response if isinstance(response, dict) else {}
            raw_reason = end.get("finish_reason") or response.get("finish_reason")
            reason = self._finish_reason(raw_reason, None)
            usage = _v1_usage(response.get("meta"))
        if not produced and reason != "content_filtered":
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        yield ChatDelta("", finish_reason=reason, usage=usage)

    async def _v2_events(
        self, resp: aiohttp.ClientResponse
    ) -> AsyncGenerator[tuple[str, str | ToolCallDelta | dict[str, Any]], None]:
        """("text", piece) per content-delta and tool-plan-delta, ("call", fragment)
        per tool-call-start / tool-call-delta, then ("end", message-end event)."""
        decoder = SSEDecoder()
        calls: dict[Any, int] = {}  # the event's index -> our call index
        while (event := await read_sse_event(resp.content, decoder)) is not None:
            data = event.data
            if not data.strip() or data.strip() == "[DONE]":
                continue
            obj = self._parse_json(data, "stream event")
            kind = obj.get("type") or event.event
            if kind == "content-delta":
                text = _v2_delta_text(obj)
                if text:
                    yield "text", text
            elif kind == "tool-plan-delta":
                plan = _v2_message_field(obj, "tool_plan")
                if isinstance(plan, str) and plan:
                    yield "text", plan
            elif kind in ("tool-call-start", "tool-call-delta"):
                fragment = _v2_call_fragment(obj, kind == "tool-call-start", calls)
                if fragment is not None:
                    yield "call", fragment
            elif kind == "message-end":
                yield "end", obj
                return

    async def _v1_events(
        self, resp: aiohttp.ClientResponse
    ) -> AsyncGenerator[tuple[str, str | ToolCallDelta | dict[str, Any]], None]:
        """("text", piece) per text-generation line, then ("end", stream-end line)."""
        lines = JSONLinesReader(resp.content, self._label, secrets=self._secrets)
        while (obj := await lines.next()) is not None:
            kind = obj.get("event_type")
            if kind == "text-generation":
                text = obj.get("text")
                if isinstance(text, str) and text:
                    yield "text", text
            elif kind == "stream-end":
                yield "end", obj
                return

    # --- shared by both wire formats ---------------------------------------------------

    def _finish_reason(self, raw: Any, error: Any) -> FinishReason:
        """Our finish reason for Cohere's; raises for ERROR / TIMEOUT (with the vendor's
        `error` text when it sent one) and PROTOCOL when the reason is missing."""
        if not isinstance(raw, str) or not raw:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: the answer has no finish_reason"
            )
        name = raw.upper()
        failed = FAILED_REASONS.get(name)
        if failed is not None:
            detail = error if isinstance(error, str) and error else f"finish_reason {raw}"
            raise ProviderError(failed, f"{self._label}: {redact(detail[:500], self._secrets)}")
        return FINISH_REASONS.get(name, "other")

    def _parse_json(self, data: str, what: str) -> dict[str, Any]:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise ProviderError(
                ErrorCategory.PROTOCOL,
                f"{self._label}: {what} is not JSON: {redact(data[:200], self._secrets)!r}",
            ) from exc
        if not isinstance(obj, dict):
            raise ProviderError(ErrorCategory.PROTOCOL, f"{self._label}: {what} is not an object")
        return obj

    async def _error(self, resp: aiohttp.ClientResponse) -> ProviderError:
        error = await error_from_response(resp, self._label, secrets=self._secrets)
        if resp.status == INVALID_TOKEN_STATUS:
            return ProviderError(
                ErrorCategory.AUTH,
                error.message,
                status=error.status,
                retry_after=error.retry_after,
            )
        return error

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is shared and owned by the app."""


def _v2_delta_text(obj: Mapping[str, Any]) -> str:
    delta = obj.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    text = content.get("text") if isinstance(content, dict) else None
    return text if isinstance(text, str) else ""


def _v2_message(message: Message) -> dict[str, Any]:
    """One message in v2's shape (see the module doc for tools and images)."""
    if message.role == "assistant" and message.tool_calls:
        out: dict[str, Any] = {
            "role": "assistant",
            "tool_calls": [call.to_json() for call in message.tool_calls],
        }
        if message.content:
            out["tool_plan"] = message.content
        return out
    if message.role == "tool" and message.tool_call_id is not None:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.parts:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            else:
                image: dict[str, Any] = {"url": part.as_url()}
                if part.detail is not None:
                    image["detail"] = part.detail
                content.append({"type": "image_url", "image_url": image})
        return {"role": message.role, "content": content}
    return {"role": message.role, "content": message.content}


def _v2_tools(
    tools: tuple[ToolSpec, ...], choice: ToolChoice | None
) -> tuple[list[dict[str, Any]], str | None]:
    """v2 `tools` and `tool_choice`: Cohere has REQUIRED and NONE (auto is the
    default); one named function is sent as the only tool, REQUIRED."""
    if choice is not None and choice.mode == "function":
        tools = tuple(tool for tool in tools if tool.name == choice.name) or tools
    specs = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
        if tool.description is not None:
            function["description"] = tool.description
        specs.append({"type": "function", "function": function})
    mode = choice.mode if choice is not None else "auto"
    wire = {"required": "REQUIRED", "function": "REQUIRED", "none": "NONE"}.get(mode)
    return specs, wire


def _v2_message_field(obj: Mapping[str, Any], name: str) -> Any:
    delta = obj.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    return message.get(name) if isinstance(message, dict) else None


def _v2_call_fragment(
    obj: Mapping[str, Any], start: bool, calls: dict[Any, int]
) -> ToolCallDelta | None:
    """A tool-call-start (the next call index, with id and name) or tool-call-delta
    (arguments of a started call) event as a fragment; None when it says nothing."""
    call = _v2_message_field(obj, "tool_calls")
    if isinstance(call, list):  # one call per event; tolerate a one-item list
        call = call[0] if call else None
    if not isinstance(call, dict):
        return None
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    arguments = function.get("arguments")
    arguments = arguments if isinstance(arguments, str) else ""
    key = obj.get("index")
    if start:
        index = len(calls)
        calls[key if key is not None else -1 - index] = index
        name = function.get("name")
        return ToolCallDelta(
            index,
            str(call.get("id") or f"call_{index}"),
            name if isinstance(name, str) else "",
            arguments,
        )
    index_of = calls.get(key)
    if index_of is None or not arguments:
        return None
    return ToolCallDelta(index_of, arguments=arguments)
