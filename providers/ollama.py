"""The Ollama adapter: Ollama's native `POST /api/chat`, streamed as NDJSON.

Flow: `ChatParams` in; a POST of `{model, messages, stream, options}`; `ChatDelta`s
out of the newline-delimited JSON body (`{"message": {...}, "done": false}` per
piece, then one `{"done": true, "done_reason", "prompt_eval_count", "eval_count"}`).
Every failure leaves as a
`ProviderError`. Deadlines beyond connecting belong to the Rx operators around
the provider; they stop iterating, which closes the upstream response at once.

Tools and images: `ChatParams.tools` go as `tools` (OpenAI's function shape);
Ollama has no `tool_choice`, so `none` sends no tools and `required` or one named
function is refused (BAD_REQUEST naming Ollama). An assistant's calls become
`tool_calls` with arguments as objects, `tool` messages carry the answered
function's `tool_name`, images go as the message's `images` (base64; Ollama
fetches no URLs). Ollama sends whole calls (arguments as an object): each comes
out as one `ToolCallDelta` with the arguments as JSON text and, unless Ollama
gave one, an id made per answer; a finished answer with calls ends `tool_calls`.

    vendor:  -{"The"}-{" sky"}-{done:true, stop, counts}|
    out:     -"The"---" sky"---final(complete, usage)|
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp

from config.models import ClientConfig, OllamaConfig
from providers.http_errors import error_from_exception, error_from_response, redact
from providers.ndjson import JSONLinesReader
from providers.tool_wire import (
    OPENAI_ONLY_PARAMS,
    arguments_object,
    arguments_text,
    bad_request,
    inline_image,
    tool_names,
    tools_finish,
)
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    FinishReason,
    Message,
    ProviderError,
    TokenUsage,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
)

"""The longest NDJSON line accepted (Cohere v1's stream-end echoes the whole chat)."""

FINISH_REASONS: Mapping[str, FinishReason] = MappingProxyType(
    {"stop": "complete", "length": "max_tokens"}
)

OPTION_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "max_tokens": "num_predict",
        "microstat": "mirostat",
        "microstat_eta": "mirostat_eta",
        "microstat_tau": "mirostat_tau",
    }
)
"""Param names Ollama spells differently inside `options`: ours (OpenAI-style) and
Glide 0.1.0's (`microstat*`)."""

TOP_LEVEL_PARAMS: frozenset[str] = frozenset({"format", "keep_alive", "think", "tools"})
"""Params that are fields of the request itself, not model options."""

_PROTECTED = frozenset({"model", "messages", "stream", "options", *OPENAI_ONLY_PARAMS})


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(obj: Mapping[str, Any]) -> TokenUsage:
    # prompt_eval_count is left out when the whole prompt came from Ollama's cache.
    prompt, response = _count(obj, "prompt_eval_count"), _count(obj, "eval_count")
    return TokenUsage(
        prompt_tokens=prompt, response_tokens=response, total_tokens=prompt + response
    )


def _finish_reason(raw: Any) -> FinishReason:
    return FINISH_REASONS.get(raw, "other") if isinstance(raw, str) else "other"


def _content(obj: Mapping[str, Any]) -> str:
    message = obj.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


class OllamaProvider:
    """A model served by Ollama (local or remote), over its native chat API.

    In: the `OllamaConfig` block, the model's `ClientConfig` and the app's shared
    `aiohttp.ClientSession`. Out: `stream` per the `ChatProvider`
    protocol. Ollama needs no key, so no auth header is sent.
    """

    continues = False
    """Capability: this adapter cannot continue a partial answer (that hop restarts)."""
    tools = True  # capabilities: see providers.types.ChatProvider
    images = True
    image_urls = False  # Ollama takes base64 images only

    def __init__(
        self,
        config: OllamaConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "ollama",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self._url = f"{config.base_url.rstrip('/')}{config.chat_endpoint}"
        self._default_params = dict(config.default_params)
        self._session = session
        self._label = f"{provider_id}/{config.model}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout)

    def request_body(self, params: ChatParams) -> dict[str, Any]:
        """The JSON body for `params`.

        Default params are overridden by the request's. `max_tokens` becomes
        `options.num_predict`; `format`, `keep_alive`, `think` and `tools` stay
        request fields; an `options` object is merged in as given; every other
        key (temperature, top_p, top_k, seed, stop, repeat_penalty, num_ctx, ...)
        goes into `options`. `model`, `messages` and `stream` are ours.
        `ChatParams.tools` replace a `tools` param (see the module doc for tools,
        calls, results and images). Raises `ProviderError(BAD_REQUEST)` for a
        `tool_choice` Ollama lacks or an image URL.
        """
        merged: dict[str, Any] = {**self._default_params, **params.params}
        body: dict[str, Any] = {}
        options: dict[str, Any] = {}
        given = merged.get("options")
        if isinstance(given, dict):
            options.update(given)
        for key, value in merged.items():
            if key in _PROTECTED:
                continue
            if key in TOP_LEVEL_PARAMS:
                body[key] = value
            elif key == "stop" and isinstance(value, str):
                options["stop"] = [value]
            else:
                options[OPTION_ALIASES.get(key, key)] = value
        if params.tools:
            tools = _tools(params.tools, params.tool_choice, self._label)
            if tools:
                body["tools"] = tools
            else:
                body.pop("tools", None)
        body["model"] = self.model_name
        names = tool_names(params.messages)
        body["messages"] = [self._message(m, names) for m in params.messages]
        body["stream"] = True
        if options:
            body["options"] = options
        return body

    def _message(self, message: Message, names: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {"function": {"name": call.name, "arguments": arguments_object(call, self._label)}}
                for call in message.tool_calls
            ]
        name = names.get(message.tool_call_id or "") if message.role == "tool" else None
        if name is not None:
            out["tool_name"] = name
        images = [inline_image(image, self._label, "Ollama")[1] for image in message.images]
        if images:
            out["images"] = images
        return out

    async def stream(self, params: ChatParams) -> AsyncGenerator[ChatDelta, None]:
        """Stream one answer.

        In: `params`. Out: a `ChatDelta` per non-empty `message.content` and one
        per tool call in `message.tool_calls` (whole), then,
        after the `done: true` line, one `ChatDelta("", finish_reason, usage)`.
        Raises `ProviderError`: by HTTP status for an error response (a missing
        model is TRANSIENT, see `_error`); TRANSIENT for an `{"error"}` line
        mid-stream; PROTOCOL for a malformed stream or one ending without
        `done: true`; EMPTY_OUTPUT when the finished answer had no text.
        Closing the generator or cancelling its consumer closes the response.
        """
        produced = False
        calls = 0
        answer = ""
        final: dict[str, Any] | None = None
        try:
            async with self._session.post(
                self._url,
                json=self.request_body(params),
                headers={"Accept": "application/x-ndjson"},
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raise await self._error(resp)
                lines = JSONLinesReader(resp.content, self._label)
                try:
                    while (obj := await lines.next()) is not None:
                        if "error" in obj:
                            raise self._stream_error(obj["error"])
                        text = _content(obj)
                        if text:
                            produced = True
                            yield ChatDelta(text)
                        for name, arguments, ident in _calls(obj):
                            answer = answer or _answer_key(obj)
                            call = ToolCallDelta(
                                calls, ident or f"call_{answer}_{calls}", name, arguments
                            )
                            calls += 1
                            produced = True
                            yield ChatDelta("", tool_calls=(call,))
                        if obj.get("done") is True:
                            final = obj
                            break
                finally:
                    if final is None:
                        resp.close()  # abandoned or broken: drop the connection, never reuse it
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc

        if final is None:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream ended before a done:true line"
            )
        if not produced:
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        reason = tools_finish(_finish_reason(final.get("done_reason")), False, calls > 0)
        yield ChatDelta("", finish_reason=reason, usage=_usage(final))

    async def _error(self, resp: aiohttp.ClientResponse) -> ProviderError:
        error = await error_from_response(resp, self._label)
        if resp.status == 404:
            # Ollama answers 404 when the model is not pulled on that server. That is
            # this model's configuration, not the client's request: another model (or
            # this one, once pulled) can answer, so the failure is TRANSIENT and
            # retryable rather than a BAD_REQUEST that would end the whole request.
            return ProviderError(
                ErrorCategory.TRANSIENT,
                error.message,
                status=error.status,
                retry_after=error.retry_after,
            )
        return error

    def _stream_error(self, error: Any) -> ProviderError:
        """An `{"error": "..."}` object inside a 200 answer (the runner failed)."""
        message = error if isinstance(error, str) else json.dumps(error)
        return ProviderError(ErrorCategory.TRANSIENT, f"{self._label}: {redact(message[:500])}")

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is shared and owned by the app."""


def _tools(
    tools: tuple[ToolSpec, ...], choice: ToolChoice | None, label: str
) -> list[dict[str, Any]]:
    """Our tools in Ollama's (OpenAI's) shape; none for `tool_choice: none`."""
    mode = choice.mode if choice is not None else "auto"
    if mode == "none":
        return []
    if mode != "auto":
        raise bad_request(
            label,
            f"Ollama has no tool_choice: it cannot be made to call "
            f"{'a tool' if mode == 'required' else repr(choice.name if choice else '')}",
        )
    out = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
        if tool.description is not None:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def _calls(obj: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(name, arguments as JSON text, Ollama's id if any) per call in `message.tool_calls`."""
    message = obj.get("message")
    raw = message.get("tool_calls") if isinstance(message, dict) else None
    out: list[tuple[str, str, str | None]] = []
    for call in raw if isinstance(raw, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            ident = call.get("id")
            out.append(
                (
                    function["name"],
                    arguments_text(function.get("arguments")),
                    ident if isinstance(ident, str) and ident else None,
                )
            )
    return out


def _answer_key(obj: Mapping[str, Any]) -> str:
    """A short key for one answer (Ollama has no response id): from its model and
    `created_at`, so made-up call ids differ between answers but not between runs."""
    seed = f"{obj.get('model', '')}|{obj.get('created_at', '')}"
    return hashlib.sha256(seed.encode()).hexdigest()[:12]
