"""The Google Gemini API adapter (`generateContent` / `streamGenerateContent?alt=sse`).

Flow: `ChatParams` in; system messages become `systemInstruction`, the rest
`contents` with roles user/model, params become `generationConfig`; the API key
travels in the `x-goog-api-key` header, never in the URL. `ChatDelta`s come out
of the SSE stream (each event a whole `GenerateContentResponse`; there is no
`[DONE]`: a stream is complete when a `finishReason` arrived and the body
ended), or one `ChatResult` from the non-streaming call. Vendor failures leave
as `ProviderError`, classified by Google's RPC `status` (and `ErrorInfo`
reason), with `retry_after` from `Retry-After` or the error's `RetryInfo`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import aiohttp

from config.models import ClientConfig, GeminiConfig
from providers.http_errors import (
    MAX_MESSAGE_CHARS,
    error_from_exception,
    parse_retry_after,
    read_bounded,
    redact,
)
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
    classify_http_status,
)

FINISH_REASONS: Mapping[str, FinishReason] = MappingProxyType(
    {
        "STOP": "complete",
        "MAX_TOKENS": "max_tokens",
        "SAFETY": "content_filtered",
        "RECITATION": "content_filtered",
        "BLOCKLIST": "content_filtered",
        "PROHIBITED_CONTENT": "content_filtered",
        "SPII": "content_filtered",
        "IMAGE_SAFETY": "content_filtered",
    }
)

STATUS_CATEGORIES: Mapping[str, ErrorCategory] = MappingProxyType(
    {
        "RESOURCE_EXHAUSTED": ErrorCategory.RATE_LIMITED,
        "UNAUTHENTICATED": ErrorCategory.AUTH,
        "PERMISSION_DENIED": ErrorCategory.AUTH,
        "INVALID_ARGUMENT": ErrorCategory.BAD_REQUEST,
        "FAILED_PRECONDITION": ErrorCategory.BAD_REQUEST,
        "OUT_OF_RANGE": ErrorCategory.BAD_REQUEST,
        "NOT_FOUND": ErrorCategory.BAD_REQUEST,
        "UNAVAILABLE": ErrorCategory.TRANSIENT,
        "INTERNAL": ErrorCategory.TRANSIENT,
        "UNKNOWN": ErrorCategory.TRANSIENT,
        "ABORTED": ErrorCategory.TRANSIENT,
        "DEADLINE_EXCEEDED": ErrorCategory.TIMEOUT,
        "CANCELLED": ErrorCategory.TIMEOUT,
    }
)

# Google answers a bad API key with 400 INVALID_ARGUMENT; the ErrorInfo reason says why.
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})

# OpenAI-style names accepted in params, and the generationConfig field each becomes.
GENERATION_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "max_tokens": "maxOutputTokens",
        "max_output_tokens": "maxOutputTokens",
        "top_p": "topP",
        "top_k": "topK",
        "stop": "stopSequences",
        "stop_sequences": "stopSequences",
        "candidate_count": "candidateCount",
        "presence_penalty": "presencePenalty",
        "frequency_penalty": "frequencyPenalty",
        "response_mime_type": "responseMimeType",
        "response_schema": "responseSchema",
        "thinking_config": "thinkingConfig",
    }
)

# Params that are request fields beside generationConfig, with their snake_case aliases.
TOP_LEVEL_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "safetySettings": "safetySettings",
        "safety_settings": "safetySettings",
        "tools": "tools",
        "toolConfig": "toolConfig",
        "tool_config": "toolConfig",
        "cachedContent": "cachedContent",
        "cached_content": "cachedContent",
        "labels": "labels",
    }
)

# Request fields the adapter owns: params never override them.
_PROTECTED = frozenset(
    {"model", "contents", "systemInstruction", "system_instruction", "stream", "messages"}
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(raw: Any) -> TokenUsage | None:
    """`usageMetadata` in our names; thinking tokens count as response tokens."""
    if not isinstance(raw, dict):
        return None
    prompt = _count(raw, "promptTokenCount")
    response = _count(raw, "candidatesTokenCount") + _count(raw, "thoughtsTokenCount")
    total = _count(raw, "totalTokenCount") or prompt + response
    return TokenUsage(prompt_tokens=prompt, response_tokens=response, total_tokens=total)


def _finish_reason(raw: str) -> FinishReason:
    return FINISH_REASONS.get(raw, "other")


def _first_candidate(candidates: Any) -> dict[str, Any] | None:
    """The candidate with index 0 (we never ask for more), or None."""
    if not isinstance(candidates, list):
        return None
    for candidate in candidates:
        if isinstance(candidate, dict) and candidate.get("index", 0) == 0:
            return candidate
    return None


def _texts(candidate: Mapping[str, Any]) -> list[str]:
    """The answer's text parts; thought summaries (`thought: true`) are not the answer."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return []
    out: list[str] = []
    for part in parts:
        if isinstance(part, dict) and not part.get("thought"):
            text = part.get("text")
            if isinstance(text, str) and text:
                out.append(text)
    return out


def _candidate_finish(candidate: Mapping[str, Any]) -> str | None:
    reason = candidate.get("finishReason")
    if isinstance(reason, str) and reason and reason != "FINISH_REASON_UNSPECIFIED":
        return reason
    return None


def _metadata(obj: Mapping[str, Any]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for key, name in (("responseId", "response_id"), ("modelVersion", "model_version")):
        value = obj.get(key)
        if isinstance(value, str) and value:
            meta[name] = value
    return meta


def _blocked_reason(obj: Mapping[str, Any]) -> str | None:
    feedback = obj.get("promptFeedback")
    if isinstance(feedback, dict):
        reason = feedback.get("blockReason")
        if isinstance(reason, str) and reason and reason != "BLOCK_REASON_UNSPECIFIED":
            return reason
    return None


def build_contents(
    messages: tuple[Message, ...],
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Turn our messages into Gemini's `systemInstruction` and `contents`.

    In: messages with roles system, user, assistant (any other role is sent as
    user). Out: the system instruction (several system messages joined by blank
    lines into one part; None when there is none) and the turns, assistant
    mapped to "model" and consecutive same-role messages merged into one turn
    with one part each. `name` has no place in Gemini's format and is dropped.
    """
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "model" if message.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].append({"text": message.content})
        else:
            contents.append({"role": role, "parts": [{"text": message.content}]})
    instruction = {"parts": [{"text": "\n\n".join(system)}]} if system else None
    return instruction, contents


def _apply_params(
    source: Mapping[str, Any], body: dict[str, Any], generation: dict[str, Any]
) -> None:
    """Sort one params mapping into top-level request fields and generationConfig."""
    for key, value in source.items():
        if key in _PROTECTED:
            continue
        if key in ("generationConfig", "generation_config"):
            if isinstance(value, dict):
                generation.update(value)
            continue
        if key in TOP_LEVEL_FIELDS:
            body[TOP_LEVEL_FIELDS[key]] = value
            continue
        field = GENERATION_ALIASES.get(key, key)
        if field == "stopSequences" and isinstance(value, str):
            value = [value]
        generation[field] = value


def _retry_delay(error: Mapping[str, Any]) -> float | None:
    """Seconds from a `google.rpc.RetryInfo` detail ("retryDelay": "34s"), if any."""
    details = error.get("details")
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = detail.get("retryDelay")
            match = _DURATION.match(delay) if isinstance(delay, str) else None
            if match:
                return float(match.group(1))
    return None


def _error_reasons(error: Mapping[str, Any]) -> set[str]:
    details = error.get("details")
    if not isinstance(details, list):
        return set()
    return {
        str(detail["reason"])
        for detail in details
        if isinstance(detail, dict) and isinstance(detail.get("reason"), str)
    }


class GeminiProvider:
    """A chat provider for one Gemini model over the Gemini API (AI Studio).

    In: the model's `GeminiConfig`, its `ClientConfig` and the app's shared
    `aiohttp.ClientSession`. Out: `stream` and `complete` per the
    `ChatProvider` protocol.
    """

    continues = False
    tools = False  # capabilities: see providers.types.ChatProvider
    images = False
    image_urls = False
    """Capability: this adapter cannot continue a partial answer (that hop restarts)."""

    def __init__(
        self,
        config: GeminiConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "gemini",
    ) -> None:
        key = config.api_key.get_secret_value()
        model = config.model.removeprefix("models/")
        base = f"{config.base_url.rstrip('/')}/models/{quote(model, safe='')}"
        self.provider_id = provider_id
        self.model_name = config.model
        self._stream_url = f"{base}:streamGenerateContent"
        self._complete_url = f"{base}:generateContent"
        self._headers = {"x-goog-api-key": key}
        self._default_params = dict(config.default_params)
        self._session = session
        self._secrets = (key,) if key else ()
        self._label = f"{provider_id}/{config.model}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout)

    def request_body(self, params: ChatParams) -> dict[str, Any]:
        """The JSON body for `params` (the same for both endpoints).

        Default params, then the request's (which win, also across spellings:
        `max_tokens` and `maxOutputTokens` are one field): OpenAI-style names map
        to generationConfig fields (max_tokens→maxOutputTokens, top_p→topP,
        top_k→topK, stop→stopSequences, ...), a `generationConfig` object merges
        in, request-level fields (safetySettings, tools, ...) stay top-level and
        anything else passes into generationConfig as given.
        """
        body: dict[str, Any] = {}
        generation: dict[str, Any] = {}
        _apply_params(self._default_params, body, generation)
        _apply_params(params.params, body, generation)
        instruction, contents = build_contents(params.messages)
        body["contents"] = contents
        if instruction is not None:
            body["systemInstruction"] = instruction
        if generation:
            body["generationConfig"] = generation
        return body

    async def stream(self, params: ChatParams) -> AsyncGenerator[ChatDelta, None]:
        """Stream one answer.

        In: `params`. Out: a `ChatDelta` per non-empty text part, then, once the
        body ended after a `finishReason`, one `ChatDelta("", finish_reason,
        usage)` (usage from the last `usageMetadata`). Raises `ProviderError`:
        HTTP and mid-stream `{"error": ...}` events by RPC status; BAD_REQUEST
        for a blocked prompt; PROTOCOL for a malformed stream or one that ends
        without a finishReason; EMPTY_OUTPUT when a complete answer had no text
        (a safety stop without text is `content_filtered` instead). Closing the
        generator or cancelling its consumer closes the HTTP response at once.

            vendor:  -"Hel"-"lo"+STOP-|
            out:     -"Hel"-"lo"------final|
        """
        headers = {**self._headers, "Accept": "text/event-stream"}
        finish: str | None = None
        usage: TokenUsage | None = None
        metadata: dict[str, str] = {}
        produced = False
        ended = False
        try:
            async with self._session.post(
                self._stream_url,
                params={"alt": "sse"},
                json=self.request_body(params),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raise await self._error_from_response(resp)
                decoder = SSEDecoder()
                try:
                    while (event := await read_sse_event(resp.content, decoder)) is not None:
                        if not event.data.strip():
                            continue
                        chunk = self._parse_event(event.data)
                        if not metadata:
                            metadata = _metadata(chunk)
                        usage = _usage(chunk.get("usageMetadata")) or usage
                        candidate = _first_candidate(chunk.get("candidates"))
                        if candidate is None:
                            blocked = _blocked_reason(chunk)
                            if blocked is not None:
                                raise self._blocked(blocked)
                            continue
                        for text in _texts(candidate):
                            produced = True
                            yield ChatDelta(text)
                        finish = _candidate_finish(candidate) or finish
                    ended = True
                finally:
                    if not ended:
                        resp.close()  # abandoned or broken: drop the connection, never reuse it
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc

        if finish is None:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream ended without a finishReason"
            )
        reason = _finish_reason(finish)
        if not produced and reason != "content_filtered":
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        yield ChatDelta("", finish_reason=reason, usage=usage, metadata=metadata or None)

    def _parse_event(self, data: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise ProviderError(
                ErrorCategory.PROTOCOL,
                f"{self._label}: stream event is not JSON: {redact(data[:200], self._secrets)!r}",
            ) from exc
        if not isinstance(chunk, dict):
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream event is not a JSON object"
            )
        error = chunk.get("error")
        if error:
            raise self._body_error(error, status=None, retry_after=None)
        return chunk

    def _blocked(self, reason: str) -> ProviderError:
        return ProviderError(ErrorCategory.BAD_REQUEST, f"{self._label}: prompt blocked: {reason}")

    def _body_error(
        self, error: Any, *, status: int | None, retry_after: float | None
    ) -> ProviderError:
        """A Google RPC error object (`{"code", "message", "status", "details"}`),
        classified by `status` and ErrorInfo reason, else by the HTTP status."""
        if not isinstance(error, dict):
            category = classify_http_status(status) if status else ErrorCategory.TRANSIENT
            message = str(error)
        else:
            rpc = str(error.get("status") or "")
            if _error_reasons(error) & _AUTH_REASONS:
                category = ErrorCategory.AUTH
            elif rpc in STATUS_CATEGORIES:
                category = STATUS_CATEGORIES[rpc]
            elif status is not None:
                category = classify_http_status(status)
            else:
                code = error.get("code")
                category = (
                    classify_http_status(code)
                    if isinstance(code, int) and code >= 400
                    else ErrorCategory.TRANSIENT
                )
            text = str(error.get("message") or "").strip()
            message = f"{rpc}: {text}" if rpc and text else (text or rpc or "unknown error")
            if retry_after is None:
                retry_after = _retry_delay(error)
        message = redact(message, self._secrets)
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "..."
        return ProviderError(
            category, f"{self._label}: {message}", status=status, retry_after=retry_after
        )

    async def _error_from_response(self, resp: aiohttp.ClientResponse) -> ProviderError:
        """The `ProviderError` for a non-success response (its body read, at most 64 KB)."""
        body = await read_bounded(resp)
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        try:
            parsed: Any = json.loads(body.decode(resp.charset or "utf-8", errors="replace"))
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and parsed:  # the non-SSE stream wraps errors in an array
            parsed = parsed[0]
        if isinstance(parsed, dict) and parsed.get("error"):
            return self._body_error(parsed["error"], status=resp.status, retry_after=retry_after)
        text = " ".join(body.decode(resp.charset or "utf-8", errors="replace").split())
        return self._body_error(
            text or resp.reason or "no error body", status=resp.status, retry_after=retry_after
        )

    async def complete(self, params: ChatParams) -> ChatResult:
        """One non-streamed answer.

        In: `params`. Out: a `ChatResult` (text parts joined, finish reason,
        usage, `response_id` / `model_version` metadata). Raises `ProviderError`;
        a blocked prompt is BAD_REQUEST, an answer without text EMPTY_OUTPUT
        (unless a safety stop, which is `content_filtered`).
        """
        try:
            async with self._session.post(
                self._complete_url,
                json=self.request_body(params),
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raise await self._error_from_response(resp)
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
        if obj.get("error"):
            raise self._body_error(obj["error"], status=None, retry_after=None)
        candidate = _first_candidate(obj.get("candidates"))
        if candidate is None:
            blocked = _blocked_reason(obj)
            if blocked is not None:
                raise self._blocked(blocked)
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: no candidates returned"
            )
        text = "".join(_texts(candidate))
        raw_reason = _candidate_finish(candidate)
        reason = _finish_reason(raw_reason) if raw_reason is not None else "other"
        if not text and reason != "content_filtered":
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        return ChatResult(
            content=text,
            finish_reason=reason,
            usage=_usage(obj.get("usageMetadata")) or TokenUsage(),
            metadata=_metadata(obj),
        )

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is shared and owned by the app."""
