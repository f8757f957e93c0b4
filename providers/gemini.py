"""The Google Gemini API adapter (`streamGenerateContent?alt=sse`).

Flow: `ChatParams` in; system messages become `systemInstruction`, the rest
`contents` with roles user/model, params become `generationConfig`; the API key
travels in the `x-goog-api-key` header, never in the URL. `ChatDelta`s come out
of the SSE stream (each event a whole `GenerateContentResponse`; there is no
`[DONE]`: a stream is complete when a `finishReason` arrived and the body
ended). Vendor failures leave
as `ProviderError`, classified by Google's RPC `status` (and `ErrorInfo`
reason), with `retry_after` from `Retry-After` or the error's `RetryInfo`.

Tools and images: `ChatParams.tools` become `tools: [{functionDeclarations}]`
(parameter schemas cut down to Gemini's OpenAPI subset, see `gemini_schema`) and
`toolConfig.functionCallingConfig` (AUTO / ANY / NONE, `allowedFunctionNames` for
one function); an assistant's calls become `functionCall` parts, `tool` messages
`functionResponse` parts (keyed by function name) in a user turn; images become
`inlineData` parts (no URLs: `fileData` needs files uploaded to Google first).
Gemini sends whole calls without ids: each comes out as one `ToolCallDelta` whose
id is made from the response id and the call's index (and carries the part's
`thoughtSignature`, which the history needs back, see `call_id`).
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
from providers.tool_wire import (
    OPENAI_ONLY_PARAMS,
    arguments_object,
    arguments_text,
    inline_image,
    result_name,
    tool_names,
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
    {
        "model",
        "contents",
        "systemInstruction",
        "system_instruction",
        "stream",
        "messages",
        *OPENAI_ONLY_PARAMS,
    }
)

FAILED_FINISHES: frozenset[str] = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})
"""Finish reasons that mean the model's tool call failed: another model may do better."""

IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "image/gif"}
)
"""Image media types sent as `inlineData`."""

CALLING_MODES: Mapping[str, str] = MappingProxyType(
    {"auto": "AUTO", "required": "ANY", "function": "ANY", "none": "NONE"}
)

SIGNATURE_MARK = "~ts~"
"""Separates a call id from the thought signature it carries (see `call_id`)."""

_SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)
_FORMATS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "string": frozenset({"enum", "date-time"}),
        "integer": frozenset({"int32", "int64"}),
        "number": frozenset({"float", "double"}),
    }
)
_MAX_REF_DEPTH = 8

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


def _answer_parts(candidate: Mapping[str, Any]) -> list[str | tuple[str, Any, str | None]]:
    """The answer's parts in order: text (thought summaries are not the answer), and
    per `functionCall` part its (name, args, thoughtSignature)."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    out: list[str | tuple[str, Any, str | None]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        call = part.get("functionCall")
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            signature = part.get("thoughtSignature")
            out.append(
                (call["name"], call.get("args"), signature if isinstance(signature, str) else None)
            )
            continue
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
    messages: tuple[Message, ...], label: str = "gemini"
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Turn our messages into Gemini's `systemInstruction` and `contents`.

    In: messages with roles system, user, assistant and tool (a `tool` message
    without a `tool_call_id`, or any other role, is sent as user text). Out: the
    system instruction (several system messages joined by blank lines into one
    part; None when there is none) and the turns, assistant mapped to "model"
    and consecutive same-role messages merged into one turn. An assistant's calls
    are `functionCall` parts, a tool result a `functionResponse` part naming the
    function it answers, images `inlineData` parts. `name` has no place in
    Gemini's format and is dropped. Raises `ProviderError(BAD_REQUEST)` for an
    image URL or type Gemini does not take inline, or a result for no call.
    """
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names = tool_names(messages)
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "model" if message.role == "assistant" else "user"
        parts = _parts(message, names, label)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    instruction = {"parts": [{"text": "\n\n".join(system)}]} if system else None
    return instruction, contents


def _parts(message: Message, names: Mapping[str, str], label: str) -> list[dict[str, Any]]:
    if message.role == "tool" and message.tool_call_id is not None:
        name = result_name(message, names, label, "Gemini")
        return [{"functionResponse": {"name": name, "response": _response(message.content)}}]
    if message.role == "assistant" and message.tool_calls:
        parts: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
        for call in message.tool_calls:
            part: dict[str, Any] = {
                "functionCall": {"name": call.name, "args": arguments_object(call, label)}
            }
            _, _, signature = call.id.partition(SIGNATURE_MARK)
            if signature:
                part["thoughtSignature"] = signature
            parts.append(part)
        return parts
    if message.parts:
        out: list[dict[str, Any]] = []
        for item in message.parts:
            if isinstance(item, TextPart):
                if item.text:
                    out.append({"text": item.text})
            else:
                out.append(_image_part(item, label))
        return out
    return [{"text": message.content}]


def _image_part(part: ImagePart, label: str) -> dict[str, Any]:
    media_type, data = inline_image(part, label, "Gemini", IMAGE_TYPES)
    return {"inlineData": {"mimeType": media_type, "data": data}}


def _response(content: str) -> dict[str, Any]:
    """A tool result as `functionResponse.response` (a JSON object): an object result
    as it is, anything else under `output` (Gemini's documented key)."""
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {"output": content}


def call_id(response_id: str, index: int, signature: str | None) -> str:
    """The id of call `index` of one answer (Gemini sends none): deterministic per
    answer. A part's `thoughtSignature` rides along after `SIGNATURE_MARK`, so the
    call goes back into history with it, as thinking models require."""
    base = f"call_{response_id}_{index}" if response_id else f"call_{index}"
    return f"{base}{SIGNATURE_MARK}{signature}" if signature else base


def gemini_schema(schema: Any, defs: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON schema cut down to the OpenAPI subset Gemini's `parameters` takes.

    `$ref`s into `$defs` / `definitions` are inlined (to a depth of 8); a type list
    with "null" becomes `nullable`, several types `anyOf`; `oneOf` becomes `anyOf`
    and a one-item `allOf` its item; `const` becomes a one-value `enum`; enums of
    non-strings, formats Gemini lacks and every other key it does not know
    (`additionalProperties`, `$schema`, `examples`, ...) are dropped.
    """
    if not isinstance(schema, dict):
        return schema
    if defs is None:
        defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if depth >= _MAX_REF_DEPTH or not isinstance(target, dict):
            return {"type": "object"}
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return gemini_schema(merged, defs, depth + 1)
    source = dict(schema)
    all_of = source.pop("allOf", None)
    if isinstance(all_of, list) and all_of:
        for item in all_of:
            if isinstance(item, dict):
                source = {**gemini_schema(item, defs, depth + 1), **source}
    one_of = source.pop("oneOf", None)
    if one_of is not None and "anyOf" not in source:
        source["anyOf"] = one_of
    if "const" in source and "enum" not in source:
        source["enum"] = [source["const"]]
    out: dict[str, Any] = {}
    kind = source.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        if len(kinds) == 1:
            kind = kinds[0]
        else:
            kind = None
            source["anyOf"] = [{"type": k} for k in kinds]
    if isinstance(kind, str):
        out["type"] = kind
    for key, value in source.items():
        if key not in _SCHEMA_KEYS or key == "type" or key in out:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: gemini_schema(sub, defs, depth) for name, sub in value.items()}
        elif key == "items":
            out[key] = gemini_schema(value, defs, depth)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [gemini_schema(sub, defs, depth) for sub in value]
        elif key == "enum":
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                out[key] = value
        elif key == "format":
            if value in _FORMATS.get(str(kind), frozenset()):
                out[key] = value
        else:
            out[key] = value
    if isinstance(out.get("required"), list) and isinstance(out.get("properties"), dict):
        out["required"] = [name for name in out["required"] if name in out["properties"]]
    return out


def function_declarations(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    """Our tool specs as Gemini `functionDeclarations`; a function without parameters
    has no `parameters` (Gemini refuses an object schema without properties)."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        declaration: dict[str, Any] = {"name": tool.name}
        if tool.description:
            declaration["description"] = tool.description
        schema = gemini_schema(tool.parameters) if tool.parameters else {}
        if schema.get("properties"):
            declaration["parameters"] = schema
        out.append(declaration)
    return out


def tool_config(choice: ToolChoice | None) -> dict[str, Any] | None:
    """Our tool choice as `toolConfig.functionCallingConfig` (None when unset)."""
    if choice is None:
        return None
    config: dict[str, Any] = {"mode": CALLING_MODES[choice.mode]}
    if choice.mode == "function" and choice.name:
        config["allowedFunctionNames"] = [choice.name]
    return {"functionCallingConfig": config}


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
    `aiohttp.ClientSession`. Out: `stream` per the
    `ChatProvider` protocol.
    """

    continues = False
    """Capability: this adapter cannot continue a partial answer (that hop restarts)."""
    tools = True  # capabilities: see providers.types.ChatProvider
    images = True
    image_urls = False  # Gemini takes inline bytes or uploaded files, not https URLs

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
        anything else passes into generationConfig as given. `ChatParams.tools`
        are added to `tools` as one `functionDeclarations` entry (beside tools such
        as googleSearch given as params) and `tool_choice` sets `toolConfig`.
        """
        body: dict[str, Any] = {}
        generation: dict[str, Any] = {}
        _apply_params(self._default_params, body, generation)
        _apply_params(params.params, body, generation)
        if params.tools:
            given = body.get("tools")
            others = (
                [t for t in given if isinstance(t, dict) and "functionDeclarations" not in t]
                if isinstance(given, list)
                else []
            )
            body["tools"] = [*others, {"functionDeclarations": function_declarations(params.tools)}]
            config = tool_config(params.tool_choice)
            if config is not None:
                body["toolConfig"] = config
        instruction, contents = build_contents(params.messages, self._label)
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
        calls = 0
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
                        for item in _answer_parts(candidate):
                            produced = True
                            if isinstance(item, str):
                                yield ChatDelta(item)
                            else:
                                name, args, signature = item
                                ident = call_id(metadata.get("response_id", ""), calls, signature)
                                call = ToolCallDelta(calls, ident, name, arguments_text(args))
                                calls += 1
                                yield ChatDelta("", tool_calls=(call,))
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
        self._check_finish(finish)
        reason = tools_finish(_finish_reason(finish), False, calls > 0)
        if not produced and reason != "content_filtered":
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        yield ChatDelta("", finish_reason=reason, usage=usage, metadata=metadata or None)

    def _check_finish(self, finish: str) -> None:
        """Raise for a finish reason that says the model's tool call failed (TRANSIENT:
        another model may call the tool well)."""
        if finish in FAILED_FINISHES:
            raise ProviderError(
                ErrorCategory.TRANSIENT, f"{self._label}: the model's tool call failed ({finish})"
            )

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

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is shared and owned by the app."""
