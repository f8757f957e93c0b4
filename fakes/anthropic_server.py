"""A fake Anthropic Messages API on 127.0.0.1, for tests and benchmarks.

Flow: a `POST /v1/messages` request comes in; the server answers as the mutable
`FakeAnthropicScript` says — a `message` JSON, an SSE stream in Anthropic's own
event grammar (`message_start`, `content_block_start`, `ping`,
`content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`),
or one of the `Fault`s. Like the real API it insists on `x-api-key`,
`anthropic-version` and `max_tokens`. A request may pick its own fault with the
`x-fake-fault` header. `FakeAnthropicStats` records what arrived and how each
response ended, including streams the client closed before completion.

    async with run_fake_anthropic() as fake:
        fake.script.fault = "http_529"
        ...  # configure AnthropicConfig(base_url=fake.url, ...)
        await fake.wait_stream_closed(within=1.0)

Tools: with `script.tool_calls` set the answer (after any text) is one `tool_use`
block per call, streamed as `content_block_start` + `input_json_delta` fragments,
with stop_reason `tool_use`; `fault_in_tool_call` moves a mid-stream fault inside
the first call's arguments. Requests' `tools`, `tool_choice`, image blocks and
`tool_use` / `tool_result` pairing are validated as the real API does (400
`invalid_request_error`).

Standalone: `python -m fakes.anthropic_server --port 9200 --chunks 50 --delay 0.02`.
"""

from __future__ import annotations

import asyncio
import base64
import json
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
    continue_from,
    fake_app,
    half_body,
    record_request,
    refuse,
    retry_after_headers,
    serve_app,
    serve_until_signalled,
    stall_until_client_gone,
    track_stream,
    trailing_assistant,
)
from fakes.tool_script import (
    RequestInvalid,
    ScriptedCall,
    check_function_name,
    check_object_schema,
    require,
)

Fault = Literal[
    "none",
    "refuse",
    "http_400",
    "http_401",
    "http_429",
    "http_500",
    "http_529",
    "stall_before_first",
    "stall_mid_stream",
    "truncated",
    "error_event",
    "empty",
    "malformed",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)

FakeStopReason = Literal[
    "end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"
]

_ERRORS: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        400: ("invalid_request_error", "messages: roles must alternate between user and assistant"),
        401: ("authentication_error", "invalid x-api-key"),
        429: (
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests "
            "per minute.",
        ),
        500: ("api_error", "Internal server error"),
        529: ("overloaded_error", "Overloaded"),
    }
)
_FAULT_STATUS: Mapping[str, int] = MappingProxyType(
    {"http_400": 400, "http_401": 401, "http_429": 429, "http_500": 500, "http_529": 529}
)


@dataclass
class FakeAnthropicScript:
    """How the fake answers; tests mutate it between (or during) requests.

    `chunks` are the `text_delta`s, `delay` the seconds slept before each one,
    `stop_reason` the one `message_delta` carries. `thinking`, when set, is sent
    first as a thinking block (`thinking_delta` + `signature_delta`) that a
    client must not show. `fault_after_chunks` is how many text deltas
    `stall_mid_stream`, `truncated`, `error_event` and `malformed` send before
    misbehaving; `error_type` is the mid-stream error's `error.type`.
    `retry_after` is the 429's `retry-after` header (None omits it).
    `tool_calls` (`fakes.tool_script.ScriptedCall`s) follow the text as `tool_use`
    blocks; `fault_in_tool_call` moves a mid-stream fault into the first one.

    Prefill: when the last message is an assistant message, the answer goes on
    after it (`fakes.common.continue_from`), as Claude does; like the real API, a
    prefill that ends in whitespace is a 400. `prefill_overlap` characters of the
    prefill's tail are repeated first.
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " Claude"])
    delay: float = 0.0
    stop_reason: FakeStopReason = "end_turn"
    thinking: str | None = None
    fault: Fault = "none"
    fault_after_chunks: int = 1
    error_type: str = "overloaded_error"
    retry_after: str | None = "1"
    input_tokens: int = 11
    cache_read_input_tokens: int = 0
    prefill_overlap: int = 0
    tool_calls: list[ScriptedCall] = field(default_factory=list)
    fault_in_tool_call: bool = False


_MID_STREAM_FAULTS = ("stall_mid_stream", "truncated", "error_event", "malformed")
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _check_tools(body: Mapping[str, Any]) -> None:
    """`tools` and `tool_choice` as the Messages API takes them (custom tools only)."""
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        require(isinstance(tools, list), "tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            where = f"tools.{i}"
            require(isinstance(tool, dict), f"{where}: Input should be an object")
            unknown = set(tool) - {"name", "description", "input_schema", "cache_control", "type"}
            require(
                not unknown,
                f"{where}.{sorted(unknown)[0] if unknown else ''}: Extra inputs are not permitted",
            )
            check_function_name(tool.get("name"), f"{where}.name")
            check_object_schema(tool.get("input_schema"), f"{where}.input_schema")
            require(
                isinstance(tool.get("description", ""), str),
                f"{where}.description: must be a string",
            )
            names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        require(isinstance(choice, dict), "tool_choice: Input should be an object")
        kind = choice.get("type")
        require(kind in ("auto", "any", "tool", "none"), f"tool_choice.type: unknown {kind!r}")
        require(
            tools is not None or kind == "none",
            "tool_choice may only be specified while providing tools",
        )
        if kind == "tool":
            require(choice.get("name") in names, "tool_choice.name: must name one of the tools")
        require(
            isinstance(choice.get("disable_parallel_tool_use", False), bool),
            "tool_choice.disable_parallel_tool_use: must be a boolean",
        )


def _check_block(block: Any, role: str, where: str) -> None:
    require(isinstance(block, dict), f"{where}: Input should be an object")
    kind = block.get("type")
    if kind == "text":
        require(
            isinstance(block.get("text"), str) and block["text"] != "",
            f"{where}: text content blocks must be non-empty",
        )
    elif kind == "image":
        require(role == "user", f"{where}: image blocks are only allowed in user messages")
        source = block.get("source")
        require(isinstance(source, dict), f"{where}.source: Field required")
        if source.get("type") == "base64":
            require(
                source.get("media_type") in _IMAGE_TYPES,
                f"{where}.source.media_type: Input should be one of {', '.join(_IMAGE_TYPES)}",
            )
            data = source.get("data")
            require(isinstance(data, str) and data != "", f"{where}.source.data: Field required")
            try:
                base64.b64decode(data, validate=True)
            except ValueError as exc:
                raise RequestInvalid(f"{where}.source.data: invalid base64 data") from exc
        elif source.get("type") == "url":
            require(
                str(source.get("url", "")).startswith("https://"),
                f"{where}.source.url: must be an https URL",
            )
        else:
            raise RequestInvalid(f"{where}.source.type: Input should be 'base64' or 'url'")
    elif kind == "tool_use":
        require(
            role == "assistant", f"{where}: tool_use blocks are only allowed in assistant messages"
        )
        require(
            isinstance(block.get("id"), str) and block["id"] != "", f"{where}.id: Field required"
        )
        check_function_name(block.get("name"), f"{where}.name")
        require(
            isinstance(block.get("input"), dict),
            f"{where}.input: Input should be a valid dictionary",
        )
    elif kind == "tool_result":
        require(role == "user", f"{where}: tool_result blocks are only allowed in user messages")
        require(isinstance(block.get("tool_use_id"), str), f"{where}.tool_use_id: Field required")
        content = block.get("content", "")
        require(
            isinstance(content, str | list), f"{where}.content: Input should be a string or a list"
        )
    else:
        raise RequestInvalid(f"{where}.type: unknown content block type {kind!r}")


def _check_messages(messages: Any) -> None:
    """Content blocks, and each assistant turn's `tool_use` ids answered by
    `tool_result` blocks at the start of the very next user turn."""
    if not isinstance(messages, list):
        return
    pending: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        for j, block in enumerate(blocks):
            _check_block(block, str(role), f"messages.{i}.content.{j}")
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if pending:
            require(
                role == "user" and set(pending) <= set(results),
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(pending)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message.",
            )
        leading = 0
        for block in blocks:
            if block.get("type") != "tool_result":
                break
            leading += 1
        require(
            leading == len(results),
            f"messages.{i}: tool_result blocks must come first in the content",
        )
        require(
            set(results) <= set(pending),
            f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: "
            f"{', '.join(str(r) for r in results if r not in pending)}. Each `tool_result` block "
            "must have a corresponding `tool_use` block in the previous message.",
        )
        pending = [b["id"] for b in blocks if b.get("type") == "tool_use"]


class FakeAnthropicStats(FakeStats):
    """What the fake Anthropic server has seen (see `FakeStats`)."""


FAKE_SCRIPT = web.AppKey("fake_anthropic_script", FakeAnthropicScript)
FAKE_STATS = web.AppKey("fake_anthropic_stats", FakeAnthropicStats)


def _error_response(
    status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
    return web.json_response(body, status=status, headers=headers)


def _event(kind: str, payload: Mapping[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


class _Handler:
    """The request handler of one fake app (state lives on the app)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        script = self._app[FAKE_SCRIPT]
        stats = self._app[FAKE_STATS]
        number, body = await record_request(request, stats)

        if not request.headers.get("x-api-key"):
            return _error_response(401, "authentication_error", "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return _error_response(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        if not isinstance(body, dict):
            return _error_response(400, "invalid_request_error", "Request body is not valid JSON")
        if not isinstance(body.get("max_tokens"), int):
            return _error_response(400, "invalid_request_error", "max_tokens: Field required")
        try:
            _check_tools(body)
            _check_messages(body.get("messages"))
            uses_tools = any(
                isinstance(m, dict)
                and isinstance(m.get("content"), list)
                and any(
                    isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result")
                    for b in m["content"]
                )
                for m in body.get("messages") or []
            )
            require(
                not uses_tools or body.get("tools") is not None,
                "Requests which include `tool_use` or `tool_result` blocks must define tools.",
            )
        except RequestInvalid as exc:
            return _error_response(400, "invalid_request_error", str(exc))

        fault: str = request.headers.get(FAULT_HEADER, script.fault)
        if fault not in FAULTS:
            return _error_response(
                400, "invalid_request_error", f"unknown {FAULT_HEADER} {fault!r}"
            )
        if fault == "refuse":
            return refuse(request)
        if fault in _FAULT_STATUS:
            status = _FAULT_STATUS[fault]
            headers = retry_after_headers(status, script.retry_after, "retry-after")
            kind, message = _ERRORS[status]
            return _error_response(status, kind, message, headers)

        chunks = script.chunks
        partial = trailing_assistant(body.get("messages"))
        if partial is not None:
            if partial != partial.rstrip():
                return _error_response(
                    400,
                    "invalid_request_error",
                    "messages: final assistant content cannot end with trailing whitespace",
                )
            chunks = continue_from(chunks, partial, script.prefill_overlap)
        model = str(body.get("model") or "claude-fake")
        ident = f"msg_fake{number}"
        resp: web.StreamResponse | None = None
        async with track_stream(request, stats):
            if body.get("stream"):
                resp = web.StreamResponse(
                    headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                )
                await resp.prepare(request)
                await self._stream(request, resp, script, chunks, fault, ident, model)
            else:
                resp = await self._complete(request, script, chunks, fault, ident, model)
        return resp if resp is not None else web.Response()

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        script: FakeAnthropicScript,
        answer: list[str],
        fault: str,
        ident: str,
        model: str,
    ) -> None:
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
            return
        usage = {
            "input_tokens": script.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": script.cache_read_input_tokens,
            "output_tokens": 1,
        }
        message: dict[str, Any] = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        await resp.write(_event("message_start", {"message": message}))
        index = 0
        if script.thinking is not None:
            await resp.write(
                _event(
                    "content_block_start",
                    {"index": index, "content_block": {"type": "thinking", "thinking": ""}},
                )
            )
            delta = {"type": "thinking_delta", "thinking": script.thinking}
            await resp.write(_event("content_block_delta", {"index": index, "delta": delta}))
            delta = {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}
            await resp.write(_event("content_block_delta", {"index": index, "delta": delta}))
            await resp.write(_event("content_block_stop", {"index": index}))
            index += 1
        chunks = [] if fault == "empty" else answer
        # a tool-only answer has no text block (the real API opens none)
        text_open = bool(chunks) or not script.tool_calls
        if text_open:
            block = {"type": "text", "text": ""}
            await resp.write(
                _event("content_block_start", {"index": index, "content_block": block})
            )
        await resp.write(_event("ping", {}))

        midstream = fault in _MID_STREAM_FAULTS
        in_call = midstream and script.fault_in_tool_call and bool(script.tool_calls)
        sent = 0
        for text in chunks:
            if midstream and not in_call and sent >= script.fault_after_chunks:
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            delta = {"type": "text_delta", "text": text}
            await resp.write(_event("content_block_delta", {"index": index, "delta": delta}))
            sent += 1
        cut = midstream and not in_call  # the fault comes after the text, as it always did

        stop_reason = script.stop_reason
        if not cut and script.tool_calls and fault != "empty":
            if text_open:
                await resp.write(_event("content_block_stop", {"index": index}))
                index += 1
            stop_reason = "tool_use"
            for number, call in enumerate(script.tool_calls):
                if number:
                    index += 1
                use_block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": call.id or f"toolu_fake{number}",
                    "name": call.name,
                    "input": {},
                }
                await resp.write(
                    _event("content_block_start", {"index": index, "content_block": use_block})
                )
                opening = {"type": "input_json_delta", "partial_json": ""}
                await resp.write(_event("content_block_delta", {"index": index, "delta": opening}))
                for piece in call.fragments():
                    if script.delay:
                        await asyncio.sleep(script.delay)
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    await resp.write(
                        _event("content_block_delta", {"index": index, "delta": delta})
                    )
                    sent += 1
                    if in_call:
                        cut = True
                        break
                if cut:
                    break
                if number < len(script.tool_calls) - 1:
                    await resp.write(_event("content_block_stop", {"index": index}))

        if fault == "stall_mid_stream" and cut:
            await stall_until_client_gone(request)
            return
        if fault == "truncated" and cut:
            await resp.write_eof()
            return
        if fault == "error_event" and cut:
            error = {"type": script.error_type, "message": "Overloaded"}
            await resp.write_eof(_event("error", {"error": error}))
            return
        if fault == "malformed" and cut:
            await resp.write(b'event: content_block_delta\ndata: {"type": "content_block_del\n\n')
            await resp.write_eof(_event("message_stop", {}))
            return

        await resp.write(_event("content_block_stop", {"index": index}))
        await resp.write(
            _event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": sent},
                },
            )
        )
        await resp.write_eof(_event("message_stop", {}))

    async def _complete(
        self,
        request: web.Request,
        script: FakeAnthropicScript,
        answer: list[str],
        fault: str,
        ident: str,
        model: str,
    ) -> web.StreamResponse:
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
        if fault == "error_event":
            kind = script.error_type
            return _error_response(529 if kind == "overloaded_error" else 500, kind, "Overloaded")
        text = "" if fault == "empty" else "".join(answer)
        content: list[dict[str, Any]] = []
        if script.thinking is not None:
            content.append(
                {"type": "thinking", "thinking": script.thinking, "signature": "EqQBCgIYAhIM"}
            )
        if text:
            content.append({"type": "text", "text": text})
        stop_reason = script.stop_reason
        if script.tool_calls and fault != "empty":
            stop_reason = "tool_use"
            for number, call in enumerate(script.tool_calls):
                content.append(
                    {
                        "type": "tool_use",
                        "id": call.id or f"toolu_fake{number}",
                        "name": call.name,
                        "input": call.arguments,
                    }
                )
        payload = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": script.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": script.cache_read_input_tokens,
                "output_tokens": 0 if fault == "empty" else len(answer),
            },
        }
        data = json.dumps(payload).encode()
        if fault == "malformed":
            return web.Response(
                body=b'{"id": "msg_broken", "content": [', content_type="application/json"
            )
        if fault in ("stall_mid_stream", "truncated"):
            return await half_body(request, data, stall=fault == "stall_mid_stream")
        return web.Response(body=data, content_type="application/json")


def make_fake_anthropic_app(script: FakeAnthropicScript | None = None) -> web.Application:
    """Build the fake's aiohttp app: `POST /v1/messages` in, scripted answers out.

    The script and stats live in `app[FAKE_SCRIPT]` and `app[FAKE_STATS]`.
    """
    script = script if script is not None else FakeAnthropicScript()
    app = fake_app(FAKE_SCRIPT, script, FAKE_STATS, FakeAnthropicStats())
    app.router.add_post("/v1/messages", _Handler(app).handle)
    return app


@dataclass(frozen=True)
class FakeAnthropic(RunningStreamFake[FakeAnthropicScript, FakeAnthropicStats]):
    """A running fake: `url` is the base URL to configure (the origin, no path)."""

    script_key = FAKE_SCRIPT
    stats_key = FAKE_STATS


@asynccontextmanager
async def run_fake_anthropic(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeAnthropicScript | None = None
) -> AsyncIterator[FakeAnthropic]:
    """Serve the fake on `host:port` (0 picks a free port) for the `async with` body.

    Yields a `FakeAnthropic`; on exit the listener closes and stalled responses end.
    """
    app = make_fake_anthropic_app(script)
    async with serve_app(app, host, port) as root:
        yield FakeAnthropic(url=root, app=app)


def main(argv: list[str] | None = None) -> None:
    """Command line entry: parse flags, serve until SIGINT/SIGTERM."""
    parser = cli_parser(
        "Fake Anthropic Messages API server", port=9200, faults=FAULTS, unit="text delta"
    )
    parser.add_argument("--stop-reason", choices=get_args(FakeStopReason), default="end_turn")
    args = parser.parse_args(argv)
    script = FakeAnthropicScript(
        chunks=cli_chunks(args.chunks),
        delay=args.delay,
        fault=args.fault,
        stop_reason=args.stop_reason,
    )
    serve_until_signalled(
        lambda: run_fake_anthropic(host=args.host, port=args.port, script=script), "Anthropic"
    )


if __name__ == "__main__":
    main()
