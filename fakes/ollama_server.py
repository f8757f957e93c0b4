"""A fake Ollama server (native `POST /api/chat`) on 127.0.0.1, for tests and benchmarks.

Flow: an Ollama chat request comes in; the server answers as the mutable
`FakeOllamaScript` says — one JSON object (`stream: false`), an NDJSON stream of
`{"message": {...}, "done": false}` lines ending in a `done: true` line with
`done_reason` and token counts (Ollama streams unless told `stream: false`), or
one of the `Fault`s. Errors are Ollama's `{"error": "..."}` bodies, and a failure
mid-stream is an `{"error": ...}` line in a 200 stream, as Ollama does it. A
request may pick its own fault with the `x-fake-fault` header. With
`script.tool_calls` set, the answer (after any text) carries each call whole in
its own line's `message.tool_calls` (arguments as an object), `done_reason` stop;
`fault_in_tool_call` makes a mid-stream fault strike where the first call's line
goes (`truncated` and `malformed` cut that line in half). `tools`, `images`,
assistant `tool_calls` (arguments must be objects) and `tool` messages are
validated as Ollama decodes them. `FakeOllamaStats`
records what arrived and how each response ended, including streams the client
closed before completion.

    async with run_fake_ollama() as fake:
        fake.script.fault = "http_404"
        ...  # configure OllamaConfig(base_url=fake.url, ...)
        await fake.wait_stream_closed(within=1.0)

Standalone: `python -m fakes.ollama_server --port 9400 --chunks 50 --delay 0.02`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    "http_404",
    "http_429",
    "http_500",
    "stall_before_first",
    "stall_mid_stream",
    "truncated",
    "error_event",
    "empty",
    "malformed",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)

FakeDoneReason = Literal["stop", "length", "load"]

_ERRORS: Mapping[int, str] = MappingProxyType(
    {
        400: "invalid options: num_predict must be an integer",
        401: "unauthorized",
        404: 'model "{model}" not found, try pulling it first',
        429: "too many requests, please try again later",
        500: "llama runner process has terminated: exit status 2",
    }
)
_FAULT_STATUS: Mapping[str, int] = MappingProxyType(
    {"http_400": 400, "http_401": 401, "http_404": 404, "http_429": 429, "http_500": 500}
)
MID_STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"


@dataclass
class FakeOllamaScript:
    """How the fake answers; tests mutate it between (or during) requests.

    `chunks` are the content pieces, `delay` the seconds slept before each one,
    `done_reason` the last line's. `fault_after_chunks` is how many pieces
    `stall_mid_stream`, `truncated`, `error_event` and `malformed` send before
    misbehaving. `retry_after` is the 429's `Retry-After` (None omits it).
    `split_lines` writes each line in two pieces so one straddles TCP reads.
    `tool_calls` follow the text, one whole call per line; `fault_in_tool_call`
    makes a mid-stream fault strike where the first one goes.
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " fake"])
    delay: float = 0.0
    done_reason: FakeDoneReason = "stop"
    fault: Fault = "none"
    fault_after_chunks: int = 1
    retry_after: str | None = "1"
    prompt_tokens: int = 7
    split_lines: bool = False
    tool_calls: list[ScriptedCall] = field(default_factory=list)
    fault_in_tool_call: bool = False


_MID_STREAM_FAULTS = ("stall_mid_stream", "truncated", "error_event", "malformed")


def _check_request(body: Mapping[str, Any]) -> None:
    """Tools and messages as Ollama's Go structs decode them (a type mismatch is a 400)."""
    for i, tool in enumerate(body.get("tools") or []):
        require(
            isinstance(tool, dict) and tool.get("type") == "function",
            f"tools[{i}]: type must be function",
        )
        function: Any = tool.get("function")
        require(isinstance(function, dict), f"tools[{i}]: function is required")
        check_function_name(function.get("name"), f"tools[{i}].function.name")
        check_object_schema(function.get("parameters"), f"tools[{i}].function.parameters")
    for i, message in enumerate(body.get("messages") or []):
        require(isinstance(message, dict), "json: cannot unmarshal message")
        role = message.get("role")
        require(role in ("system", "user", "assistant", "tool"), f"invalid role {role!r}")
        require(
            isinstance(message.get("content", ""), str),
            "json: cannot unmarshal array into Go struct field Message.messages.content of "
            "type string",
        )
        for image in message.get("images") or []:
            require(isinstance(image, str), "json: cannot unmarshal images")
            try:
                base64.b64decode(image, validate=True)
            except ValueError as exc:
                raise RequestInvalid("illegal base64 data in images") from exc
        for call in message.get("tool_calls") or []:
            require(role == "assistant", f"messages[{i}]: only assistant messages have tool_calls")
            called: Any = call.get("function") if isinstance(call, dict) else None
            require(isinstance(called, dict), "json: cannot unmarshal tool_calls")
            check_function_name(called.get("name"), f"messages[{i}].tool_calls.function.name")
            require(
                isinstance(called.get("arguments"), dict),
                "json: cannot unmarshal string into Go struct field "
                "ToolCallFunction.messages.tool_calls.function.arguments of type "
                "api.ToolCallFunctionArguments",
            )
        if "tool_name" in message:
            require(role == "tool", f"messages[{i}]: tool_name belongs on tool messages")
            require(isinstance(message["tool_name"], str), "json: cannot unmarshal tool_name")


class FakeOllamaStats(FakeStats):
    """What the fake has seen (see `FakeStats`)."""


FAKE_SCRIPT = web.AppKey("fake_ollama_script", FakeOllamaScript)
FAKE_STATS = web.AppKey("fake_ollama_stats", FakeOllamaStats)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _call(call: ScriptedCall) -> dict[str, Any]:
    """A call as Ollama sends it: whole, arguments as an object (an id only if scripted)."""
    out: dict[str, Any] = {"function": {"name": call.name, "arguments": call.arguments}}
    if call.id is not None:
        out["id"] = call.id
    return out


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class _Handler:
    """The request handler of one fake app (state lives on the app)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        script = self._app[FAKE_SCRIPT]
        stats = self._app[FAKE_STATS]
        _, body = await record_request(request, stats)
        if not isinstance(body, dict):
            return web.json_response({"error": "missing request body"}, status=400)
        fault: str = request.headers.get(FAULT_HEADER, script.fault)
        if fault not in FAULTS:
            return web.json_response({"error": f"unknown {FAULT_HEADER} {fault!r}"}, status=400)
        model = str(body.get("model") or "")
        if not model:
            return web.json_response({"error": "model is required"}, status=400)
        try:
            _check_request(body)
        except RequestInvalid as exc:
            return web.json_response({"error": str(exc)}, status=400)
        streaming = body.get("stream", True) is not False
        if fault == "error_event" and not streaming:
            fault = "http_500"  # without a stream, a runner failure is a 500 body
        if fault in _FAULT_STATUS:
            status = _FAULT_STATUS[fault]
            headers = retry_after_headers(status, script.retry_after)
            message = _ERRORS[status].format(model=model)
            return web.json_response({"error": message}, status=status, headers=headers)

        resp: web.StreamResponse | None = None
        async with track_stream(request, stats):
            if streaming:
                resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
                await resp.prepare(request)
                await self._stream(request, resp, script, fault, model)
            else:
                resp = await self._complete(request, script, fault, model)
        return resp if resp is not None else web.Response()

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        script: FakeOllamaScript,
        fault: str,
        model: str,
    ) -> None:
        async def send(obj: Mapping[str, Any]) -> None:
            data = _line(obj)
            if script.split_lines:
                half = len(data) // 2
                await resp.write(data[:half])
                await asyncio.sleep(0.001)
                await resp.write(data[half:])
            else:
                await resp.write(data)

        if fault == "stall_before_first":
            await stall_until_client_gone(request)
            return
        chunks = [] if fault == "empty" else script.chunks
        midstream = fault in _MID_STREAM_FAULTS
        in_call = midstream and script.fault_in_tool_call and bool(script.tool_calls)
        sent = 0
        for text in chunks:
            if midstream and not in_call and sent >= script.fault_after_chunks:
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            message = {"role": "assistant", "content": text}
            await send({"model": model, "created_at": _now(), "message": message, "done": False})
            sent += 1
        if not (midstream and not in_call) and fault != "empty":
            for call in script.tool_calls:
                line = {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": "", "tool_calls": [_call(call)]},
                    "done": False,
                }
                if in_call:
                    if fault in ("truncated", "malformed"):
                        data = _line(line)
                        await resp.write_eof(
                            data[: len(data) // 2] + (b"\n" if fault == "malformed" else b"")
                        )
                        return
                    break
                await send(line)
                sent += 1
        if fault == "stall_mid_stream":
            await stall_until_client_gone(request)
            return
        if fault == "truncated":
            await resp.write_eof()
            return
        if fault == "error_event":
            await resp.write_eof(_line({"error": MID_STREAM_ERROR}))
            return
        if fault == "malformed":
            await resp.write_eof(b'{"model": "broken", "message": {"content": \n')
            return
        await resp.write_eof(_line(self._final(script, model, "", sent)))

    def _final(
        self, script: FakeOllamaScript, model: str, content: str, eval_count: int
    ) -> dict[str, Any]:
        return {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": content},
            "done_reason": script.done_reason,
            "done": True,
            "total_duration": 5_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": script.prompt_tokens,
            "prompt_eval_duration": 1_000_000,
            "eval_count": eval_count,
            "eval_duration": 3_000_000,
        }

    async def _complete(
        self, request: web.Request, script: FakeOllamaScript, fault: str, model: str
    ) -> web.StreamResponse:
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
        chunks = [] if fault == "empty" else script.chunks
        final = self._final(script, model, "".join(chunks), len(chunks))
        if script.tool_calls and fault != "empty":
            final["message"]["tool_calls"] = [_call(call) for call in script.tool_calls]
        data = json.dumps(final).encode()
        if fault == "malformed":
            return web.Response(
                body=b'{"model": "broken", "message": {', content_type="application/json"
            )
        if fault in ("stall_mid_stream", "truncated"):
            return await half_body(request, data, stall=fault == "stall_mid_stream")
        return web.Response(body=data, content_type="application/json")


def make_fake_ollama_app(script: FakeOllamaScript | None = None) -> web.Application:
    """Build the fake's aiohttp app: `POST /api/chat` in, scripted Ollama answers out.

    The script and stats live in `app[FAKE_SCRIPT]` and `app[FAKE_STATS]`.
    """
    script = script if script is not None else FakeOllamaScript()
    app = fake_app(FAKE_SCRIPT, script, FAKE_STATS, FakeOllamaStats())
    app.router.add_post("/api/chat", _Handler(app).handle)
    return app


@dataclass(frozen=True)
class FakeOllama(RunningStreamFake[FakeOllamaScript, FakeOllamaStats]):
    """A running fake: `url` is what `OllamaConfig.base_url` takes."""

    script_key = FAKE_SCRIPT
    stats_key = FAKE_STATS


@asynccontextmanager
async def run_fake_ollama(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeOllamaScript | None = None
) -> AsyncIterator[FakeOllama]:
    """Serve the fake on `host:port` (0 picks a free port) for the `async with` body.

    Yields a `FakeOllama`; on exit the listener closes and stalled responses end.
    """
    app = make_fake_ollama_app(script)
    async with serve_app(app, host, port) as root:
        yield FakeOllama(url=root, app=app)


def main(argv: list[str] | None = None) -> None:
    """Command line entry: parse flags, serve until SIGINT/SIGTERM."""
    parser = cli_parser("Fake Ollama chat server", port=9400, faults=FAULTS, unit="content piece")
    args = parser.parse_args(argv)
    script = FakeOllamaScript(chunks=cli_chunks(args.chunks), delay=args.delay, fault=args.fault)
    serve_until_signalled(
        lambda: run_fake_ollama(host=args.host, port=args.port, script=script), "Ollama"
    )


if __name__ == "__main__":
    main()
