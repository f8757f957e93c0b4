"""The OpenAI chat-completions adapter (also the wire format Azure OpenAI speaks).

Flow: `ChatParams` in; an HTTP POST to the vendor; `ChatDelta`s out of the SSE
stream (content pieces, then one final delta with `finish_reason` and usage).
Every vendor failure leaves as a
`ProviderError`. Deadlines beyond connecting are not enforced here: the Rx
operators around a provider own first-chunk, idle and overall timeouts and stop
iterating, which closes the upstream response at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp

from config.models import ClientConfig, OpenAIConfig
from protocol.jsoncodec import dumps, loads
from providers.http_errors import error_from_exception, error_from_response, redact
from providers.sse import SSEDecoder, read_sse_event
from providers.types import (
    ChatDelta,
    ChatParams,
    Continuation,
    ErrorCategory,
    FinishReason,
    ProviderError,
    TokenUsage,
    ToolCallDelta,
)

FINISH_REASONS: Mapping[str, FinishReason] = MappingProxyType(
    {
        "stop": "complete",
        "length": "max_tokens",
        "content_filter": "content_filtered",
        "tool_calls": "tool_calls",
        "function_call": "other",
    }
)

DONE = "[DONE]"
JSON_BODY = MappingProxyType({"Content-Type": "application/json"})


def _usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict):
        return None

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    prompt, response = count("prompt_tokens"), count("completion_tokens")
    return TokenUsage(
        prompt_tokens=prompt,
        response_tokens=response,
        total_tokens=count("total_tokens") or prompt + response,
    )


def _finish_reason(raw: str) -> FinishReason:
    return FINISH_REASONS.get(raw, "other")


def _first_choice(choices: Any) -> dict[str, Any] | None:
    """The choice with index 0 (we never ask for n > 1), or None when there is none."""
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


def tool_call_deltas(raw: Any) -> tuple[ToolCallDelta, ...]:
    """A streamed `delta.tool_calls` list -> the fragments it holds (malformed
    entries are skipped; a missing `index` counts as 0)."""
    if not isinstance(raw, list):
        return ()
    out: list[ToolCallDelta] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        index = item.get("index", 0)
        function = item.get("function")
        function = function if isinstance(function, dict) else {}
        call_id, name, arguments = item.get("id"), function.get("name"), function.get("arguments")
        out.append(
            ToolCallDelta(
                index if isinstance(index, int) else 0,
                call_id if isinstance(call_id, str) and call_id else None,
                name if isinstance(name, str) and name else None,
                arguments if isinstance(arguments, str) else "",
            )
        )
    return tuple(out)


def _metadata(obj: dict[str, Any]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for key, name in (("id", "response_id"), ("system_fingerprint", "system_fingerprint")):
        value = obj.get(key)
        if isinstance(value, str) and value:
            meta[name] = value
    return meta


def continuation_messages(
    messages: list[dict[str, Any]], continuation: Continuation
) -> list[dict[str, Any]]:
    """The chat messages for a continued answer, OpenAI-style.

    In: the request's messages (JSON) and the continuation. Out: the same messages
    with the instruction (when not empty) as a system message right after the
    request's own leading system messages (which stay as they are), and the
    partial answer as a final assistant message (the convention OpenAI-compatible
    servers continue from: vLLM's `continue_final_message`, Mistral's and
    DeepSeek's `prefix`; vendor flags are added by the caller).
    """
    out = list(messages)
    if continuation.instruction:
        at = 0
        while at < len(out) and out[at].get("role") == "system":
            at += 1
        out.insert(at, {"role": "system", "content": continuation.instruction})
    out.append({"role": "assistant", "content": continuation.partial})
    return out


class OpenAIWireProvider:
    """A chat provider for any endpoint speaking OpenAI's chat-completions wire format.

    In: the endpoint's URL, query and auth headers, the model's default params and
    the shared `aiohttp.ClientSession` (owned by the app). Out: `stream` per the
    `ChatProvider` protocol. Subclasses only say where to
    send and how to authenticate.

    Continues a partial answer (`continues`): the partial answer goes last as an
    assistant message (see `continuation_messages`); subclasses add vendor flags.
    """

    continues = True
    tools = True  # capabilities: see providers.types.ChatProvider (native format)
    images = True
    image_urls = True

    def __init__(
        self,
        *,
        provider_id: str,
        model_name: str,
        url: str,
        headers: Mapping[str, str],
        default_params: Mapping[str, Any],
        client: ClientConfig,
        session: aiohttp.ClientSession,
        query: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.provider_id = provider_id
        self.model_name = model_name
        self._url = url
        self._query = dict(query) if query else None
        self._headers = dict(headers)
        self._default_params = dict(default_params)
        self._session = session
        self._secrets = secrets
        self._label = f"{provider_id}/{model_name}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout)

    def request_body(self, params: ChatParams) -> dict[str, Any]:
        """The JSON body for `params`: default params, overridden by the request's, plus
        `model`, `messages` and the streaming switches (which nothing overrides)."""
        body: dict[str, Any] = {**self._default_params, **params.params}
        body["model"] = self.model_name
        body["messages"] = [message.to_json() for message in params.messages]
        if params.continuation is not None:
            body["messages"] = continuation_messages(body["messages"], params.continuation)
        if params.tools:
            body["tools"] = [tool.to_json() for tool in params.tools]
            if params.tool_choice is not None:
                body["tool_choice"] = params.tool_choice.to_json()
        else:
            body.pop("parallel_tool_calls", None)  # OpenAI refuses it without tools
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        return body

    async def stream(self, params: ChatParams) -> AsyncGenerator[ChatDelta, None]:
        """Stream one answer.

        In: `params`. Out: a `ChatDelta` per non-empty content delta (and per
        tool-call delta, its raw fragments in `tool_calls`), then, after
        `[DONE]`, one `ChatDelta("", finish_reason, usage)`. Raises `ProviderError`
        (HTTP errors by status; PROTOCOL for a malformed or unfinished stream;
        EMPTY_OUTPUT when a complete answer had no text). Closing the generator
        or cancelling its consumer closes the HTTP response at once.

            vendor:  -role-"Hel"-"lo"-stop-usage-[DONE]|
            out:     ------"Hel"-"lo"---------------final|
        """
        headers = {**self._headers, "Accept": "text/event-stream", **JSON_BODY}
        url = self.url_for(params)
        finish: str | None = None
        usage: TokenUsage | None = None
        metadata: dict[str, str] = {}
        produced = False
        called = False
        done = False
        try:
            async with self._session.post(
                url,
                params=self._query,
                data=dumps(self.request_body(params)),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raise await error_from_response(resp, self._label, secrets=self._secrets)
                decoder = SSEDecoder()
                try:
                    while (event := await read_sse_event(resp.content, decoder)) is not None:
                        data = event.data
                        if data == DONE:
                            done = True
                            break
                        if not data.strip():
                            continue
                        chunk = self._parse_event(data)
                        if not metadata:
                            metadata = _metadata(chunk)
                        if "usage" in chunk and chunk["usage"] is not None:
                            usage = _usage(chunk["usage"]) or usage
                        choice = _first_choice(chunk.get("choices"))
                        if choice is None:
                            continue
                        delta = choice.get("delta")
                        if isinstance(delta, dict):
                            content = delta.get("content")
                            text = content if isinstance(content, str) else ""
                            calls = delta.get("tool_calls")
                            fragments = tool_call_deltas(calls) if calls else ()
                            if fragments:
                                called = True
                            if text or fragments:
                                produced = True
                                yield ChatDelta(text, tool_calls=fragments)
                        reason = choice.get("finish_reason")
                        if isinstance(reason, str) and reason:
                            finish = reason
                finally:
                    if not done:
                        resp.close()  # abandoned or broken: drop the connection, never reuse it
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc

        if not done:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream ended before [DONE]"
            )
        if finish is None:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream ended without a finish_reason"
            )
        ours = _finish_reason(finish)
        if ours == "tool_calls" and not called:
            ours = "other"  # a stop for tools that carried no call (as every adapter)
        if not produced and ours != "content_filtered":
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        yield ChatDelta("", finish_reason=ours, usage=usage, metadata=metadata or None)

    def url_for(self, params: ChatParams) -> str:
        """Where `params` go (a vendor may serve continuations on another URL)."""
        del params
        return self._url

    def _parse_event(self, data: str) -> dict[str, Any]:
        try:
            chunk = loads(data)
        except ValueError as exc:
            raise ProviderError(
                ErrorCategory.PROTOCOL,
                f"{self._label}: stream event is not JSON: {redact(data[:200])!r}",
            ) from exc
        if not isinstance(chunk, dict):
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream event is not a JSON object"
            )
        error = chunk.get("error")
        if error:
            raise self._stream_error(error)
        return chunk

    def _stream_error(self, error: Any) -> ProviderError:
        """An error the vendor reported inside a 200 stream (`data: {"error": ...}`)."""
        message = str(error.get("message") if isinstance(error, dict) else error)
        code = str(error.get("code") or error.get("type") or "") if isinstance(error, dict) else ""
        category = ErrorCategory.RATE_LIMITED if "rate_limit" in code else ErrorCategory.TRANSIENT
        return ProviderError(category, f"{self._label}: {redact(message, self._secrets)}")

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is shared and owned by the app."""


class OpenAIProvider(OpenAIWireProvider):
    """OpenAI (or any OpenAI-compatible server): POST `{base_url}{chat_endpoint}`
    with `Authorization: Bearer <api_key>` (no header when the key is None)."""

    def __init__(
        self,
        config: OpenAIConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "openai",
    ) -> None:
        key = config.api_key.get_secret_value() if config.api_key is not None else None
        super().__init__(
            provider_id=provider_id,
            model_name=config.model,
            url=f"{config.base_url.rstrip('/')}{config.chat_endpoint}",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            default_params=config.default_params,
            client=client,
            session=session,
            secrets=(key,) if key else (),
        )
