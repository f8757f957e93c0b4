"""The Ollama adapter: Ollama's native `POST /api/chat`, streamed as NDJSON.

Flow: `ChatParams` in; a POST of `{model, messages, stream, options}`; `ChatDelta`s
out of the newline-delimited JSON body (`{"message": {...}, "done": false}` per
piece, then one `{"done": true, "done_reason", "prompt_eval_count", "eval_count"}`),
or one `ChatResult` from `stream: false`. Every failure leaves as a
`ProviderError`. Deadlines beyond connecting belong to the Rx operators around
the provider; they stop iterating, which closes the upstream response at once.

This module also holds `JSONLinesReader`, the NDJSON reader Cohere's v1 stream
reuses.

    vendor:  -{"The"}-{" sky"}-{done:true, stop, counts}|
    out:     -"The"---" sky"---final(complete, usage)|
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp

from config.models import ClientConfig, OllamaConfig
from providers.http_errors import error_from_exception, error_from_response, redact
from providers.ndjson import JSONLinesReader
from providers.types import (
    ChatDelta,
    ChatParams,
    ChatResult,
    ErrorCategory,
    FinishReason,
    ProviderError,
    TokenUsage,
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

_PROTECTED = frozenset({"model", "messages", "stream", "options"})


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
    `aiohttp.ClientSession`. Out: `stream` and `complete` per the `ChatProvider`
    protocol. Ollama needs no key, so no auth header is sent.
    """

    continues = False
    tools = False  # capabilities: see providers.types.ChatProvider
    images = False
    image_urls = False
    """Capability: this adapter cannot continue a partial answer (that hop restarts)."""

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

    def request_body(self, params: ChatParams, *, stream: bool) -> dict[str, Any]:
        """The JSON body for `params`.

        Default params are overridden by the request's. `max_tokens` becomes
        `options.num_predict`; `format`, `keep_alive`, `think` and `tools` stay
        request fields; an `options` object is merged in as given; every other
        key (temperature, top_p, top_k, seed, stop, repeat_penalty, num_ctx, ...)
        goes into `options`. `model`, `messages` and `stream` are ours.
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
        body["model"] = self.model_name
        body["messages"] = [{"role": m.role, "content": m.content} for m in params.messages]
        body["stream"] = stream
        if options:
            body["options"] = options
        return body

    async def stream(self, params: ChatParams) -> AsyncGenerator[ChatDelta, None]:
        """Stream one answer.

        In: `params`. Out: a `ChatDelta` per non-empty `message.content`, then,
        after the `done: true` line, one `ChatDelta("", finish_reason, usage)`.
        Raises `ProviderError`: by HTTP status for an error response (a missing
        model is TRANSIENT, see `_error`); TRANSIENT for an `{"error"}` line
        mid-stream; PROTOCOL for a malformed stream or one ending without
        `done: true`; EMPTY_OUTPUT when the finished answer had no text.
        Closing the generator or cancelling its consumer closes the response.
        """
        produced = False
        final: dict[str, Any] | None = None
        try:
            async with self._session.post(
                self._url,
                json=self.request_body(params, stream=True),
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
        yield ChatDelta(
            "", finish_reason=_finish_reason(final.get("done_reason")), usage=_usage(final)
        )

    async def complete(self, params: ChatParams) -> ChatResult:
        """One non-streamed answer (`stream: false`).

        In: `params`. Out: a `ChatResult` with the text, finish reason and usage.
        Raises `ProviderError` as `stream` does; an answer without text is
        EMPTY_OUTPUT.
        """
        try:
            async with self._session.post(
                self._url,
                json=self.request_body(params, stream=False),
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raise await self._error(resp)
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
        if "error" in obj:
            raise self._stream_error(obj["error"])
        text = _content(obj)
        if not text:
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        message = obj.get("message")
        role = message.get("role") if isinstance(message, dict) else None
        return ChatResult(
            content=text,
            finish_reason=_finish_reason(obj.get("done_reason")),
            usage=_usage(obj),
            role=role if isinstance(role, str) and role else "assistant",
        )

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
