"""A fake Cohere chat API (v1 and v2) on 127.0.0.1, for tests and benchmarks.

Flow: a `POST /v2/chat` or `POST /v1/chat` request comes in; the server answers
as the mutable `FakeCohereScript` says, in the wire format of the API asked:

- v2: a chat JSON (`message.content[].text`, `finish_reason`, `usage`) or an SSE
  stream of `message-start`, `content-start`, `content-delta`..., `content-end`,
  `message-end` (finish reason and usage) events, each with `event:` and a JSON
  `data:` whose `type` repeats the name;
- v1: a chat JSON (`text`, `finish_reason`, `meta.billed_units`) or a JSON-lines
  stream (no SSE) of `stream-start`, `text-generation`..., `stream-end` objects;

or one of the `Fault`s. v2 tools: with `script.tool_calls` set the chunks stream as
`tool-plan-delta`s (the model's plan) and each call as `tool-call-start`,
`tool-call-delta`s of its arguments and `tool-call-end`, finish reason TOOL_CALL
(`fault_in_tool_call` strikes inside the first call's arguments); a v2 request's
`tools`, `tool_choice` (REQUIRED / NONE), `image_url` parts, assistant
`tool_calls` and `tool` results (each call answered by its id) are validated.
Like the real API it wants `Authorization: Bearer ...`
(401 without one); errors are `{"message": ...}` bodies. A generation that
fails mid-stream (`error_event`) ends with finish reason ERROR, as Cohere's
does. A request may pick its own fault with the `x-fake-fault` header.
`FakeCohereStats` records what arrived and how each response ended, including
streams the client closed before completion.

    async with run_fake_cohere() as fake:
        fake.script.fault = "http_429"
        ...  # configure CohereConfig(base_url=fake.url, api="v1" or "v2", ...)
        await fake.wait_stream_closed(within=1.0)

Standalone: `python -m fakes.cohere_server --port 9300 --chunks 50 --delay 0.02`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
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
    retry_after_headers,
    serve_app,
    serve_until_signalled,
    stall_until_client_gone,
    track_stream,
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
    "http_400",
    "http_401",
    "http_429",
    "http_498",
    "http_500",
    "stall_before_first",
    "stall_mid_stream",
    "truncated",
    "error_event",
    "empty",
    "malformed",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)

FakeFinishReason = Literal[
    "COMPLETE", "STOP_SEQUENCE", "MAX_TOKENS", "TOOL_CALL", "ERROR_TOXIC", "ERROR_LIMIT", "TIMEOUT"
]

_ERRORS: Mapping[int, str] = MappingProxyType(
    {
        400: "invalid request: message must be at least 1 token long or tool results "
        "must be specified.",
        401: "invalid api token",
        429: "You are using a Trial key, which is limited to 10 API calls / minute. You can "
        "continue to use the Trial key for free or upgrade to a Production key.",
        498: "invalid api token",
        500: "internal server error, this has been reported to our developers",
    }
)
_FAULT_STATUS: Mapping[str, int] = MappingProxyType(
    {"http_400": 400, "http_401": 401, "http_429": 429, "http_498": 498, "http_500": 500}
)
GENERATION_ERROR = "internal server error: the generation failed, please retry"


@dataclass
class FakeCohereScript:
    """How the fake answers; tests mutate it between (or during) requests.

    `chunks` are the text pieces, `delay` the seconds slept before each one,
    `finish_reason` Cohere's (upper case, as both APIs send it).
    `fault_after_chunks` is how many pieces `stall_mid_stream`, `truncated`,
    `error_event` and `malformed` send before misbehaving. `retry_after` is the
    429's `Retry-After` (None omits it). `input_tokens` is the billed prompt size.
    With `tool_calls` (v2) the chunks are the tool plan and the calls follow;
    `fault_in_tool_call` moves a mid-stream fault into the first call's arguments.
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " fake"])
    delay: float = 0.0
    finish_reason: FakeFinishReason = "COMPLETE"
    fault: Fault = "none"
    fault_after_chunks: int = 1
    retry_after: str | None = "1"
    input_tokens: int = 7
    tool_calls: list[ScriptedCall] = field(default_factory=list)
    fault_in_tool_call: bool = False


_MID_STREAM_FAULTS = ("stall_mid_stream", "truncated", "error_event", "malformed")


def _check_v2(body: Mapping[str, Any]) -> None:
    """v2's tools, tool_choice and messages, as strictly as Cohere parses them."""
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        require(isinstance(tools, list), "invalid request: tools must be a list")
        for i, tool in enumerate(tools):
            require(
                isinstance(tool, dict) and tool.get("type") == "function",
                f"invalid request: tools[{i}].type must be 'function'",
            )
            function = tool.get("function")
            require(isinstance(function, dict), f"invalid request: tools[{i}].function required")
            unknown = set(function) - {"name", "description", "parameters"}
            require(not unknown, f"invalid request: tools[{i}].function has unknown {unknown}")
            check_function_name(function.get("name"), f"invalid request: tools[{i}].function.name")
            if "parameters" in function:
                check_object_schema(
                    function["parameters"], f"invalid request: tools[{i}].function.parameters"
                )
            names.add(function["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        require(
            choice in ("REQUIRED", "NONE"),
            f"invalid request: tool_choice must be one of REQUIRED, NONE, got {choice!r}",
        )
        require(bool(names), "invalid request: tool_choice requires tools")
    pending: set[str] = set()
    for i, message in enumerate(body.get("messages") or []):
        require(isinstance(message, dict), f"invalid request: messages[{i}] must be an object")
        role = message.get("role")
        require(
            role in ("system", "user", "assistant", "tool"),
            f"invalid request: messages[{i}].role {role!r} is not one of system, user, "
            "assistant, tool",
        )
        if role == "tool":
            call_id = message.get("tool_call_id")
            require(
                isinstance(call_id, str) and call_id in pending,
                f"invalid request: messages[{i}].tool_call_id {call_id!r} does not match a "
                "tool call of the assistant message before it",
            )
            require(
                isinstance(message.get("content"), str | list),
                f"invalid request: messages[{i}].content required for a tool message",
            )
            pending.discard(call_id)
            continue
        require(
            not pending,
            f"invalid request: messages[{i}]: tool calls {sorted(pending)} have no tool result",
        )
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                require(
                    kind in ("text", "image_url", "document", "thinking"),
                    f"invalid request: messages[{i}].content[{j}].type {kind!r} is unknown",
                )
                if kind == "image_url":
                    require(
                        role == "user",
                        f"invalid request: messages[{i}]: images only in user messages",
                    )
                    url = part.get("image_url", {}).get("url", "")
                    require(
                        isinstance(url, str)
                        and url.startswith(("data:image/", "https://", "http://")),
                        f"invalid request: messages[{i}].content[{j}].image_url.url must be a data "
                        "URL or an http(s) URL",
                    )
        calls = message.get("tool_calls")
        if calls is not None:
            require(
                role == "assistant",
                f"invalid request: messages[{i}]: only assistant messages have tool_calls",
            )
            for j, call in enumerate(calls):
                where = f"invalid request: messages[{i}].tool_calls[{j}]"
                require(
                    isinstance(call, dict) and isinstance(call.get("id"), str),
                    f"{where}.id required",
                )
                require(call.get("type") == "function", f"{where}.type must be 'function'")
                function = call.get("function")
                require(isinstance(function, dict), f"{where}.function required")
                check_function_name(function.get("name"), f"{where}.function.name")
                arguments = function.get("arguments")
                require(isinstance(arguments, str), f"{where}.function.arguments must be a string")
                try:
                    json.loads(arguments)
                except ValueError as exc:
                    raise RequestInvalid(f"{where}.function.arguments is not valid JSON") from exc
                pending.add(call["id"])
        else:
            require(
                content is not None and content != [],
                f"invalid request: messages[{i}].content required",
            )


class FakeCohereStats(FakeStats):
    """What the fake has seen (see `FakeStats`)."""


FAKE_SCRIPT = web.AppKey("fake_cohere_script", FakeCohereScript)
FAKE_STATS = web.AppKey("fake_cohere_stats", FakeCohereStats)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)


def _usage(script: FakeCohereScript, output_tokens: int) -> dict[str, Any]:
    return {
        "billed_units": {"input_tokens": script.input_tokens, "output_tokens": output_tokens},
        "tokens": {"input_tokens": script.input_tokens + 180, "output_tokens": output_tokens},
    }


def _sse(kind: str, payload: Mapping[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


def _json_line(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload).encode() + b"\n"


class _Handler:
    """The request handler of one fake app (state lives on the app)."""

    def __init__(self, app: web.Application, api: Literal["v1", "v2"]) -> None:
        self._app = app
        self._api = api

    async def handle(self, request: web.Request) -> web.StreamResponse:
        script = self._app[FAKE_SCRIPT]
        stats = self._app[FAKE_STATS]
        _, body = await record_request(request, stats)
        if not request.headers.get("Authorization", "").lower().startswith("bearer "):
            return _error(401, "no api key supplied")
        if not isinstance(body, dict):
            return _error(400, "invalid request: could not parse the JSON body")
        if self._api == "v2":
            try:
                _check_v2(body)
            except RequestInvalid as exc:
                return _error(400, str(exc))
        fault: str = request.headers.get(FAULT_HEADER, script.fault)
        if fault not in FAULTS:
            return _error(400, f"invalid request: unknown {FAULT_HEADER} {fault!r}")
        if fault in _FAULT_STATUS:
            status = _FAULT_STATUS[fault]
            headers = retry_after_headers(status, script.retry_after)
            return _error(status, _ERRORS[status], headers)

        resp: web.StreamResponse | None = None
        async with track_stream(request, stats):
            if body.get("stream"):
                content_type = (
                    "text/event-stream" if self._api == "v2" else "application/stream+json"
                )
                resp = web.StreamResponse(headers={"Content-Type": content_type})
                await resp.prepare(request)
                await self._stream(request, resp, script, fault)
            else:
                resp = await self._complete(request, script, fault)
        return resp if resp is not None else web.Response()

    async def _stream(
        self, request: web.Request, resp: web.StreamResponse, script: FakeCohereScript, fault: str
    ) -> None:
        v2 = self._api == "v2"
        ident = str(uuid.uuid4())
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
            return
        tooling = v2 and bool(script.tool_calls) and fault != "empty"
        if v2:
            start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": []}
            await resp.write(_sse("message-start", {"id": ident, "delta": {"message": start}}))
            if not tooling:
                content = {"type": "text", "text": ""}
                await resp.write(
                    _sse("content-start", {"index": 0, "delta": {"message": {"content": content}}})
                )
        else:
            await resp.write(
                _json_line(
                    {"is_finished": False, "event_type": "stream-start", "generation_id": ident}
                )
            )

        chunks = [] if fault == "empty" else script.chunks
        midstream = fault in _MID_STREAM_FAULTS
        in_call = midstream and tooling and script.fault_in_tool_call
        sent: list[str] = []
        for text in chunks:
            if midstream and not in_call and len(sent) >= script.fault_after_chunks:
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            if tooling:
                plan = {"message": {"tool_plan": text}}
                await resp.write(_sse("tool-plan-delta", {"delta": plan}))
            elif v2:
                delta = {"message": {"content": {"text": text}}}
                await resp.write(_sse("content-delta", {"index": 0, "delta": delta}))
            else:
                await resp.write(
                    _json_line(
                        {"is_finished": False, "event_type": "text-generation", "text": text}
                    )
                )
            sent.append(text)
        if tooling and not (midstream and not in_call):
            for number, call in enumerate(script.tool_calls):
                opened = {
                    "id": call.id or f"get_fake{number}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                started = {"message": {"tool_calls": opened}}
                await resp.write(_sse("tool-call-start", {"index": number, "delta": started}))
                for piece in call.fragments():
                    if script.delay:
                        await asyncio.sleep(script.delay)
                    more = {"message": {"tool_calls": {"function": {"arguments": piece}}}}
                    await resp.write(_sse("tool-call-delta", {"index": number, "delta": more}))
                    if in_call:
                        break
                if in_call:
                    break
                await resp.write(_sse("tool-call-end", {"index": number}))

        if fault == "stall_mid_stream":
            await stall_until_client_gone(request)
            return
        if fault == "truncated":
            await resp.write_eof()
            return
        if fault == "malformed":
            broken = b'event: content-delta\ndata: {"type": "content-delta", "delta": {\n\n'
            await resp.write_eof(broken if v2 else b'{"event_type": "text-generation", "te\n')
            return
        reason = "ERROR" if fault == "error_event" else script.finish_reason
        if tooling and fault != "error_event":
            reason = "TOOL_CALL"
        usage = _usage(script, len(sent))
        if v2:
            if not tooling:
                await resp.write(_sse("content-end", {"index": 0}))
            end: dict[str, Any] = {"finish_reason": reason, "usage": usage}
            if fault == "error_event":
                end["error"] = GENERATION_ERROR
            await resp.write_eof(_sse("message-end", {"delta": end}))
        else:
            response = {
                "response_id": f"resp-{ident}",
                "text": "".join(sent),
                "generation_id": ident,
                "chat_history": [],
                "finish_reason": reason,
                "meta": {"api_version": {"version": "1"}, **usage},
            }
            await resp.write_eof(
                _json_line(
                    {
                        "is_finished": True,
                        "event_type": "stream-end",
                        "response": response,
                        "finish_reason": reason,
                    }
                )
            )

    async def _complete(
        self, request: web.Request, script: FakeCohereScript, fault: str
    ) -> web.StreamResponse:
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
        text = "" if fault == "empty" else "".join(script.chunks)
        reason = "ERROR" if fault == "error_event" else script.finish_reason
        tokens = 0 if fault == "empty" else len(script.chunks)
        ident = str(uuid.uuid4())
        payload: dict[str, Any]
        if self._api == "v2":
            message: dict[str, Any] = {
                "role": "assistant",
                "content": [{"type": "text", "text": text}],
            }
            if script.tool_calls and fault != "empty":
                reason = "TOOL_CALL" if fault != "error_event" else reason
                message = {
                    "role": "assistant",
                    "tool_plan": text,
                    "tool_calls": [
                        {
                            "id": call.id or f"get_fake{number}",
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments_json()},
                        }
                        for number, call in enumerate(script.tool_calls)
                    ],
                }
            payload = {
                "id": ident,
                "message": message,
                "finish_reason": reason,
                "usage": _usage(script, tokens),
            }
        else:
            payload = {
                "response_id": ident,
                "text": text,
                "generation_id": str(uuid.uuid4()),
                "chat_history": [],
                "finish_reason": reason,
                "meta": {"api_version": {"version": "1"}, **_usage(script, tokens)},
            }
        data = json.dumps(payload).encode()
        if fault == "malformed":
            return web.Response(body=data[: len(data) // 2], content_type="application/json")
        if fault in ("stall_mid_stream", "truncated"):
            return await half_body(request, data, stall=fault == "stall_mid_stream")
        return web.Response(body=data, content_type="application/json")


def make_fake_cohere_app(script: FakeCohereScript | None = None) -> web.Application:
    """Build the fake's aiohttp app: `POST /v2/chat` and `POST /v1/chat` in, scripted
    Cohere answers out. The script and stats live in `app[FAKE_SCRIPT]` and
    `app[FAKE_STATS]`."""
    script = script if script is not None else FakeCohereScript()
    app = fake_app(FAKE_SCRIPT, script, FAKE_STATS, FakeCohereStats())
    app.router.add_post("/v2/chat", _Handler(app, "v2").handle)
    app.router.add_post("/v1/chat", _Handler(app, "v1").handle)
    return app


@dataclass(frozen=True)
class FakeCohere(RunningStreamFake[FakeCohereScript, FakeCohereStats]):
    """A running fake: `url` is what `CohereConfig.base_url` takes (both APIs)."""

    script_key = FAKE_SCRIPT
    stats_key = FAKE_STATS


@asynccontextmanager
async def run_fake_cohere(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeCohereScript | None = None
) -> AsyncIterator[FakeCohere]:
    """Serve the fake on `host:port` (0 picks a free port) for the `async with` body.

    Yields a `FakeCohere`; on exit the listener closes and stalled responses end.
    """
    app = make_fake_cohere_app(script)
    async with serve_app(app, host, port) as root:
        yield FakeCohere(url=root, app=app)


def main(argv: list[str] | None = None) -> None:
    """Command line entry: parse flags, serve until SIGINT/SIGTERM."""
    parser = cli_parser(
        "Fake Cohere chat server (v1 and v2)", port=9300, faults=FAULTS, unit="text piece"
    )
    args = parser.parse_args(argv)
    script = FakeCohereScript(chunks=cli_chunks(args.chunks), delay=args.delay, fault=args.fault)
    serve_until_signalled(
        lambda: run_fake_cohere(host=args.host, port=args.port, script=script), "Cohere"
    )


if __name__ == "__main__":
    main()
