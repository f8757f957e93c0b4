"""A fake Google Gemini API on 127.0.0.1, for tests and benchmarks.

Flow: `POST /v1beta/models/{model}:generateContent` or
`:streamGenerateContent?alt=sse` comes in; the server answers as the mutable
`FakeGeminiScript` says — a `GenerateContentResponse` JSON, an SSE stream of
them (`data: {...}` separated by CRLF pairs, usage on every event, the last one
carrying `finishReason`; no `[DONE]`), or one of the `Fault`s. Errors use
Google's RPC shape `{"error": {"code", "message", "status", "details"}}`. Like
the real API it wants `x-goog-api-key` (or `?key=`, which it records so tests
can prove the adapter never uses it). Without `alt=sse` the stream is a JSON
array, as the real endpoint sends. A request may pick its own fault with the
`x-fake-fault` header. `FakeGeminiStats` records what arrived and how each
response ended.

Tools: with `script.tool_calls` set the answer (after any text) holds one whole
`functionCall` part per call, each streamed in its own event, finishReason STOP;
`fault_in_tool_call` makes a mid-stream fault strike where the first call's
event goes (`truncated` and `malformed` cut that event in half). Requests'
`tools` (function declarations with Gemini's schema subset: an unknown schema
key is a 400, as on the real API), `toolConfig`, `inlineData` parts and the
functionCall / functionResponse pairing are validated.

    async with run_fake_gemini() as fake:
        fake.script.fault = "http_429"
        ...  # configure GeminiConfig(base_url=fake.url, ...)
        await fake.wait_stream_closed(within=1.0)

Standalone: `python -m fakes.gemini_server --port 9300 --chunks 50 --delay 0.02`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from aiohttp import web

from fakes.common import (
    FAULT_HEADER,
    FakeStats,
    RunningStreamFake,
    cli_chunks,
    cli_parser,
    fake_app,
    half_body,
    record_request,
    refuse,
    serve_app,
    serve_until_signalled,
    stall_until_client_gone,
    track_stream,
)
from fakes.tool_script import RequestInvalid, ScriptedCall, require

Fault = Literal[
    "none",
    "refuse",
    "http_400",
    "http_401",
    "http_403",
    "http_429",
    "http_500",
    "http_503",
    "invalid_key",
    "blocked_prompt",
    "stall_before_first",
    "stall_mid_stream",
    "truncated",
    "error_event",
    "empty",
    "malformed",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)

FakeFinishReason = Literal[
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "OTHER",
    "MALFORMED_FUNCTION_CALL",
]

PREFIX = "/v1beta"

_ERRORS: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        400: ("INVALID_ARGUMENT", "Invalid value at 'generation_config.temperature' (TYPE_FLOAT)"),
        401: (
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        ),
        403: (
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity).",
        ),
        429: (
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
        ),
        500: ("INTERNAL", "An internal error has occurred. Please retry or report in the docs."),
        503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    }
)
_FAULT_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "http_400": 400,
        "http_401": 401,
        "http_403": 403,
        "http_429": 429,
        "http_500": 500,
        "http_503": 503,
    }
)


@dataclass
class FakeGeminiScript:
    """How the fake answers; tests mutate it between (or during) requests.

    `chunks` are the text parts (one per event), `delay` the seconds slept
    before each, `finish_reason` the last event's. `thought`, when set, is sent
    first as a thought-summary part (`"thought": true`) a client must not show.
    `fault_after_chunks` is how many events `stall_mid_stream`, `truncated`,
    `error_event` and `malformed` send before misbehaving.
    `retry_after` is the 429's `Retry-After` header (None omits it) and
    `retry_delay` its `RetryInfo.retryDelay` (None omits the detail).
    `tool_calls` follow the text as `functionCall` parts, one event each (the first
    with `thought_signature` as its `thoughtSignature` when set);
    `fault_in_tool_call` makes a mid-stream fault strike where the first one goes.
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " Gemini"])
    delay: float = 0.0
    finish_reason: FakeFinishReason = "STOP"
    thought: str | None = None
    fault: Fault = "none"
    fault_after_chunks: int = 1
    retry_after: str | None = "1"
    retry_delay: str | None = "12s"
    prompt_tokens: int = 6
    thoughts_tokens: int = 0
    tool_calls: list[ScriptedCall] = field(default_factory=list)
    fault_in_tool_call: bool = False
    thought_signature: str | None = None


_SCHEMA_FIELDS = frozenset(
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
_SCHEMA_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})
_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse")
_MID_STREAM_FAULTS = ("stall_mid_stream", "truncated", "error_event", "malformed")
_ALLOWED = "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names"


def _check_schema(schema: Any, where: str) -> None:
    """A `Schema` as the API parses it: unknown fields and non-enum types are 400s."""
    require(isinstance(schema, dict), f"Invalid value at '{where}': must be an object")
    for key in schema:
        require(
            key in _SCHEMA_FIELDS,
            f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
            "Cannot find field.",
        )
    kind = schema.get("type")
    if kind is not None:
        require(
            isinstance(kind, str) and kind.upper() in _SCHEMA_TYPES,
            f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage"
            f".v1beta.Type), {json.dumps(kind)}",
        )
    enum = schema.get("enum")
    if enum is not None:
        require(
            isinstance(enum, list) and all(isinstance(v, str) for v in enum),
            f"Invalid value at '{where}.enum': enum values must be strings",
        )
    for name, sub in (schema.get("properties") or {}).items():
        _check_schema(sub, f"{where}.properties[{name}].value")
    if "items" in schema:
        _check_schema(schema["items"], f"{where}.items")
    for i, sub in enumerate(schema.get("anyOf") or []):
        _check_schema(sub, f"{where}.any_of[{i}]")


def _check_tools(body: dict[str, Any]) -> set[str]:
    """`tools` and `toolConfig`; returns the declared function names."""
    names: set[str] = set()
    tools = body.get("tools", [])
    require(isinstance(tools, list), "Invalid value at 'tools': must be a list")
    for i, tool in enumerate(tools):
        require(isinstance(tool, dict), f"Invalid value at 'tools[{i}]'")
        for j, declaration in enumerate(tool.get("functionDeclarations", [])):
            where = f"tools[{i}].function_declarations[{j}]"
            require(isinstance(declaration, dict), f"Invalid value at '{where}'")
            unknown = set(declaration) - {
                "name",
                "description",
                "parameters",
                "response",
                "behavior",
                "parametersJsonSchema",
            }
            require(
                not unknown,
                f"Invalid JSON payload received. Unknown name "
                f"\"{sorted(unknown)[0] if unknown else ''}\" at '{where}': Cannot find field.",
            )
            name = declaration.get("name")
            require(
                isinstance(name, str)
                and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}", name) is not None,
                f"* GenerateContentRequest.{where}.name: Invalid function name.",
            )
            if "parameters" in declaration:
                parameters = declaration["parameters"]
                _check_schema(parameters, f"{where}.parameters")
                if str(parameters.get("type", "")).upper() == "OBJECT":
                    require(
                        bool(parameters.get("properties")),
                        f"* GenerateContentRequest.{where}.parameters.properties: should be "
                        "non-empty for OBJECT type",
                    )
            names.add(name)
    config = body.get("toolConfig")
    if config is not None:
        calling: Any = config.get("functionCallingConfig") if isinstance(config, dict) else None
        require(isinstance(calling, dict), "Invalid value at 'tool_config'")
        mode = calling.get("mode", "AUTO")
        require(
            mode in ("AUTO", "ANY", "NONE", "VALIDATED"),
            f"Invalid value at 'tool_config.function_calling_config.mode', {json.dumps(mode)}",
        )
        allowed = calling.get("allowedFunctionNames")
        if allowed is not None:
            require(
                mode in ("ANY", "VALIDATED"),
                f"{_ALLOWED}: allowed_function_names should only be set when mode is ANY.",
            )
            require(
                isinstance(allowed, list) and set(allowed) <= names,
                f"{_ALLOWED}: must name declared functions",
            )
    return names


def _check_contents(contents: list[Any]) -> None:
    """Parts hold one datum each; calls only from the model, responses only from the
    user, and a turn of N calls is answered by a turn of N responses."""
    calls: list[str] = []
    for i, content in enumerate(contents):
        require(isinstance(content, dict), f"Invalid value at 'contents[{i}]'")
        role = content.get("role", "user")
        parts = content.get("parts")
        require(
            isinstance(parts, list) and len(parts) > 0,
            f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.",
        )
        responses: list[str] = []
        for j, part in enumerate(parts):
            where = f"contents[{i}].parts[{j}]"
            require(isinstance(part, dict), f"Invalid value at '{where}'")
            data = [key for key in _PART_DATA if key in part]
            require(
                len(data) == 1,
                f"* GenerateContentRequest.{where}.data: required oneof field 'data' must "
                "have one initialized field",
            )
            if "inlineData" in part:
                blob = part["inlineData"]
                require(
                    isinstance(blob, dict)
                    and isinstance(blob.get("mimeType"), str)
                    and isinstance(blob.get("data"), str),
                    f"* GenerateContentRequest.{where}.inline_data: mime_type and data are "
                    "required",
                )
                try:
                    base64.b64decode(blob["data"], validate=True)
                except ValueError as exc:
                    raise RequestInvalid(
                        f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), "
                        "Base64 decoding failed"
                    ) from exc
            if "functionCall" in part:
                call = part["functionCall"]
                require(
                    role == "model",
                    f"* GenerateContentRequest.{where}: function calls come from the model",
                )
                require(
                    isinstance(call, dict) and isinstance(call.get("name"), str),
                    f"* GenerateContentRequest.{where}.function_call.name: name is required",
                )
                require(
                    isinstance(call.get("args", {}), dict),
                    f"Invalid value at '{where}.function_call.args': must be an object",
                )
            if "functionResponse" in part:
                answer = part["functionResponse"]
                require(
                    role in ("user", "function"),
                    f"* GenerateContentRequest.{where}: function responses come from the user",
                )
                require(
                    isinstance(answer, dict) and isinstance(answer.get("name"), str),
                    f"* GenerateContentRequest.{where}.function_response.name: name is required",
                )
                require(
                    isinstance(answer.get("response"), dict),
                    f"Invalid value at '{where}.function_response.response' "
                    "(type.googleapis.com/google.protobuf.Struct): must be an object",
                )
                responses.append(answer["name"])
        if calls:
            require(
                len(responses) == len(calls) and sorted(responses) == sorted(calls),
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn.",
            )
        else:
            require(
                not responses,
                f"* GenerateContentRequest.contents[{i}]: a function response must follow a "
                "function call turn",
            )
        calls = [
            p["functionCall"]["name"] for p in parts if isinstance(p, dict) and "functionCall" in p
        ]


class FakeGeminiStats(FakeStats):
    """What the fake Gemini server has seen (see `FakeStats`)."""


FAKE_SCRIPT = web.AppKey("fake_gemini_script", FakeGeminiScript)
FAKE_STATS = web.AppKey("fake_gemini_stats", FakeGeminiStats)


def _rpc_error(
    status: int,
    rpc: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status, headers=headers)


def _has_call(event: Mapping[str, Any]) -> bool:
    candidates = event.get("candidates") or [{}]
    parts = candidates[0].get("content", {}).get("parts", [])
    return any("functionCall" in part for part in parts)


def _sse(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\r\n\r\n".encode()


class _Handler:
    """The request handler of one fake app (state lives on the app)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        script = self._app[FAKE_SCRIPT]
        stats = self._app[FAKE_STATS]
        number, body = await record_request(request, stats)

        model, _, method = request.match_info["target"].rpartition(":")
        if method not in ("generateContent", "streamGenerateContent") or not model:
            return _rpc_error(404, "NOT_FOUND", f"Method not found: {method!r}")
        if not (request.headers.get("x-goog-api-key") or request.query.get("key")):
            return _rpc_error(403, *_ERRORS[403])
        if not isinstance(body, dict) or not isinstance(body.get("contents"), list):
            return _rpc_error(
                400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: required"
            )
        try:
            _check_tools(body)
            _check_contents(body["contents"])
        except RequestInvalid as exc:
            return _rpc_error(400, "INVALID_ARGUMENT", str(exc))

        fault: str = request.headers.get(FAULT_HEADER, script.fault)
        if fault not in FAULTS:
            return _rpc_error(400, "INVALID_ARGUMENT", f"unknown {FAULT_HEADER} {fault!r}")
        if fault == "refuse":
            return refuse(request)
        if fault == "invalid_key":
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            return _rpc_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                details=[info],
            )
        if fault in _FAULT_STATUS:
            status = _FAULT_STATUS[fault]
            rpc, message = _ERRORS[status]
            headers: dict[str, str] = {}
            details: list[dict[str, Any]] = []
            if status == 429:
                if script.retry_after is not None:
                    headers["Retry-After"] = script.retry_after
                if script.retry_delay is not None:
                    details.append(
                        {
                            "@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": script.retry_delay,
                        }
                    )
            return _rpc_error(status, rpc, message, details=details, headers=headers)

        ident = f"fake-response-{number}"
        resp: web.StreamResponse | None = None
        async with track_stream(request, stats):
            if method == "streamGenerateContent":
                sse = request.query.get("alt") == "sse"
                content_type = "text/event-stream" if sse else "application/json"
                resp = web.StreamResponse(headers={"Content-Type": content_type})
                await resp.prepare(request)
                events = self._events(script, fault, ident, model)
                if sse:
                    await self._stream(request, resp, script, fault, events)
                else:
                    await resp.write_eof(json.dumps([e for e in events if e]).encode())
            else:
                resp = await self._complete(request, script, fault, ident, model)
        return resp if resp is not None else web.Response()

    def _usage(self, script: FakeGeminiScript, sent: int) -> dict[str, int]:
        usage = {
            "promptTokenCount": script.prompt_tokens,
            "candidatesTokenCount": sent,
            "totalTokenCount": script.prompt_tokens + sent + script.thoughts_tokens,
        }
        if script.thoughts_tokens:
            usage["thoughtsTokenCount"] = script.thoughts_tokens
        return usage

    def _events(
        self, script: FakeGeminiScript, fault: str, ident: str, model: str
    ) -> list[dict[str, Any]]:
        """The whole answer as GenerateContentResponse events (the last has finishReason).

        For `blocked_prompt` it is one event with promptFeedback and no candidates.
        """
        common = {"modelVersion": model, "responseId": ident}
        if fault == "blocked_prompt":
            return [
                {
                    "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                    "usageMetadata": self._usage(script, 0),
                    **common,
                }
            ]
        events: list[dict[str, Any]] = []
        if script.thought is not None:
            part = {"text": script.thought, "thought": True}
            events.append(
                {
                    "candidates": [{"content": {"parts": [part], "role": "model"}, "index": 0}],
                    "usageMetadata": self._usage(script, 0),
                    **common,
                }
            )
        chunks = [] if fault == "empty" else script.chunks
        for sent, text in enumerate(chunks, start=1):
            events.append(
                {
                    "candidates": [
                        {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
                    ],
                    "usageMetadata": self._usage(script, sent),
                    **common,
                }
            )
        if fault != "empty":
            for number, call in enumerate(script.tool_calls):
                function: dict[str, Any] = {"name": call.name, "args": call.arguments}
                if call.id is not None:
                    function["id"] = call.id
                call_part: dict[str, Any] = {"functionCall": function}
                if script.thought_signature is not None and number == 0:
                    call_part["thoughtSignature"] = script.thought_signature
                events.append(
                    {
                        "candidates": [
                            {"content": {"parts": [call_part], "role": "model"}, "index": 0}
                        ],
                        "usageMetadata": self._usage(script, len(chunks) + number + 1),
                        **common,
                    }
                )
                chunks = [*chunks, ""]  # counts toward "the answer has parts" below
        # The real API puts finishReason on the last text event; an empty answer
        # ends with a candidate whose content has no parts.
        if events and chunks:
            events[-1]["candidates"][0]["finishReason"] = script.finish_reason
        else:
            events.append(
                {
                    "candidates": [
                        {
                            "content": {"role": "model"},
                            "finishReason": script.finish_reason,
                            "index": 0,
                        }
                    ],
                    "usageMetadata": self._usage(script, 0),
                    **common,
                }
            )
        return events

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        script: FakeGeminiScript,
        fault: str,
        events: list[dict[str, Any]],
    ) -> None:
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
            return
        cut = fault in _MID_STREAM_FAULTS
        in_call = cut and script.fault_in_tool_call and bool(script.tool_calls)
        sent = 0
        for event in events:
            if in_call and _has_call(event):
                if fault in ("truncated", "malformed"):
                    data = _sse(event)
                    await resp.write(data[: len(data) // 2])
                    await resp.write_eof(b"\r\n\r\n" if fault == "malformed" else b"")
                    return
                break
            if cut and not in_call and sent >= script.fault_after_chunks:
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            await resp.write(_sse(event))
            sent += 1
        if fault == "stall_mid_stream":
            await stall_until_client_gone(request)
            return
        if fault == "error_event":
            rpc, message = _ERRORS[503]
            error = {"error": {"code": 503, "message": message, "status": rpc}}
            await resp.write_eof(_sse(error))
            return
        if fault == "malformed":
            await resp.write(b'data: {"candidates": [{"content": {"parts": [\r\n\r\n')
        await resp.write_eof()

    async def _complete(
        self,
        request: web.Request,
        script: FakeGeminiScript,
        fault: str,
        ident: str,
        model: str,
    ) -> web.StreamResponse:
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
        if fault == "error_event":
            rpc, message = _ERRORS[503]
            return _rpc_error(503, rpc, message)
        events = self._events(script, fault, ident, model)
        last = events[-1]
        payload: dict[str, Any] = {k: v for k, v in last.items() if k != "candidates"}
        if "candidates" in last:
            candidate = dict(last["candidates"][0])
            parts: list[dict[str, Any]] = []
            for event in events:
                content = event.get("candidates", [{}])[0].get("content", {})
                parts.extend(content.get("parts", []))
            candidate["content"] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
            payload["candidates"] = [candidate]
        data = json.dumps(payload).encode()
        if fault == "malformed":
            return web.Response(body=b'{"candidates": [', content_type="application/json")
        if fault in ("stall_mid_stream", "truncated"):
            return await half_body(request, data, stall=fault == "stall_mid_stream")
        return web.Response(body=data, content_type="application/json")


def make_fake_gemini_app(script: FakeGeminiScript | None = None) -> web.Application:
    """Build the fake's aiohttp app: `POST /v1beta/models/{model}:{method}` in,
    scripted answers out. The script and stats live in `app[FAKE_SCRIPT]` and
    `app[FAKE_STATS]`."""
    script = script if script is not None else FakeGeminiScript()
    app = fake_app(FAKE_SCRIPT, script, FAKE_STATS, FakeGeminiStats())
    app.router.add_post(f"{PREFIX}/models/{{target}}", _Handler(app).handle)
    return app


@dataclass(frozen=True)
class FakeGemini(RunningStreamFake[FakeGeminiScript, FakeGeminiStats]):
    """A running fake: `url` is the base URL to configure (ending in /v1beta)."""

    script_key = FAKE_SCRIPT
    stats_key = FAKE_STATS


@asynccontextmanager
async def run_fake_gemini(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeGeminiScript | None = None
) -> AsyncIterator[FakeGemini]:
    """Serve the fake on `host:port` (0 picks a free port) for the `async with` body.

    Yields a `FakeGemini`; on exit the listener closes and stalled responses end.
    """
    app = make_fake_gemini_app(script)
    async with serve_app(app, host, port) as root:
        yield FakeGemini(url=f"{root}{PREFIX}", app=app)


def main(argv: list[str] | None = None) -> None:
    """Command line entry: parse flags, serve until SIGINT/SIGTERM."""
    parser = cli_parser(
        "Fake Google Gemini API server", port=9300, faults=FAULTS, unit="text event"
    )
    parser.add_argument("--finish-reason", choices=get_args(FakeFinishReason), default="STOP")
    args = parser.parse_args(argv)
    script = FakeGeminiScript(
        chunks=cli_chunks(args.chunks),
        delay=args.delay,
        fault=args.fault,
        finish_reason=args.finish_reason,
    )
    serve_until_signalled(
        lambda: run_fake_gemini(host=args.host, port=args.port, script=script), "Gemini"
    )


if __name__ == "__main__":
    main()
