"""A fake OpenAI-compatible chat server on 127.0.0.1, for tests and benchmarks.

Flow: an OpenAI (or Azure OpenAI) chat request comes in; the server answers as the
mutable `FakeOpenAIScript` says — a `chat.completion` JSON, an SSE stream of
`chat.completion.chunk` events ending in `data: [DONE]`, or one of the `Fault`s.
A request may pick its own fault with the `x-fake-fault` header. `FakeOpenAIStats`
records what arrived and how each response ended, including streams the client
closed before completion.

Every streamed event carries `sluice_sent_ns` (`time.time_ns()` just before the
write) so a benchmark can measure how long a chunk spent in flight.

    async with run_fake_openai() as fake:
        fake.script.fault = "http_429"
        ...  # point a client at fake.url
        await fake.stats.wait_stream_closed(within=1.0)

Standalone: `python -m fakes.openai_server --port 9100 --chunks 50 --delay 0.02`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from aiohttp import web

from fakes.common import FAULT_HEADER as FAULT_HEADER  # re-exported for the tests
from fakes.common import (
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

Fault = Literal[
    "none",
    "refuse",
    "http_500",
    "http_429",
    "http_401",
    "http_400",
    "stall_before_first",
    "stall_mid_stream",
    "truncated",
    "malformed",
    "error_mid_stream",
    "empty",
    "empty_choices",
    "empty_data",
    "cut_in_tool_call",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)

MID_STREAM_FAULTS = frozenset({"stall_mid_stream", "truncated", "malformed", "error_mid_stream"})
"""Faults that strike after `fault_after_chunks` content chunks (`error_mid_stream`:
an `{"error": ...}` event, the way a 5xx reaches a client once the stream is open)."""

TOOL_FAULTS = frozenset({"cut_in_tool_call"})
"""`cut_in_tool_call`: when the answer calls tools, the stream ends (no [DONE]) after
the first half of the arguments of call number `fault_in_call` (a plain answer is
cut after `fault_after_chunks` content chunks instead, like `truncated`)."""

FakeFinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass(frozen=True)
class FakeToolCall:
    """A tool call the fake makes: `arguments` is JSON text, streamed in `pieces`
    fragments (the first fragment carries the id and the name, as OpenAI's do)."""

    name: str
    arguments: str
    id: str | None = None
    pieces: int = 3


_ERROR_BODIES: Mapping[int, dict[str, Any]] = MappingProxyType(
    {
        400: {
            "message": "Invalid value for 'temperature': expected a number between 0 and 2.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        },
        401: {
            "message": "Incorrect API key provided: sk-fake*********2345. You can find your "
            "API key at https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        },
        429: {
            "message": "Rate limit reached for requests. Please try again later.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
        500: {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    }
)
_FAULT_STATUS: Mapping[str, int] = MappingProxyType(
    {"http_400": 400, "http_401": 401, "http_429": 429, "http_500": 500}
)


@dataclass
class FakeOpenAIScript:
    """How the fake answers; tests mutate it between (or during) requests.

    `chunks` are the content deltas, `delay` the seconds slept before each one,
    `finish_reason` the vendor finish reason of the last event. `fault_after_chunks`
    is how many content chunks `stall_mid_stream`, `truncated` and `malformed` send
    before misbehaving. `retry_after` is the 429's `Retry-After` value (seconds or
    an HTTP date; None omits the header). `split_events` writes each SSE event in
    two pieces so a `data:` line straddles HTTP chunks and TCP reads.

    Prefill: a request whose last message is an assistant message gets the rest
    of the answer after it (`fakes.common.continue_from`), the way vLLM
    (`continue_final_message`), Mistral and DeepSeek (`prefix`) continue one;
    `prefill_overlap` characters of its tail are repeated first.
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " fake"])
    delay: float = 0.0
    finish_reason: FakeFinishReason = "stop"
    fault: Fault = "none"
    fault_after_chunks: int = 1
    retry_after: str | None = "1"
    prompt_tokens: int = 7
    split_events: bool = False
    prefill_overlap: int = 0
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    tool_preamble: list[str] = field(default_factory=list)
    fault_in_call: int = 0


def calls_tools(script: FakeOpenAIScript, body: dict[str, Any]) -> bool:
    """Whether this request is answered with the script's tool calls: the script has
    some, the request offers tools (and does not say `tool_choice: none`), and its
    last message (before a continuation's prefill) is not a tool result (a result
    gets the text answer: a tool loop). `tool_preamble` is the text sent before
    the calls; `fault_in_call` the call `cut_in_tool_call` breaks."""
    if not script.tool_calls or not body.get("tools") or body.get("tool_choice") == "none":
        return False
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    if messages and messages[-1].get("role") == "assistant" and len(messages) > 1:
        messages = messages[:-1]  # a continuation's prefill: what came before it decides
    return not (messages and messages[-1].get("role") == "tool")


def _pieces(text: str, count: int) -> list[str]:
    count = max(1, min(count, len(text) or 1))
    size = -(-len(text) // count) or 1
    return [text[at : at + size] for at in range(0, len(text), size)] or [""]


class FakeOpenAIStats(FakeStats):
    """What the fake OpenAI server has seen (see `FakeStats`)."""


FAKE_SCRIPT = web.AppKey("fake_openai_script", FakeOpenAIScript)
FAKE_STATS = web.AppKey("fake_openai_stats", FakeOpenAIStats)


def _error_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": body}, status=status, headers=headers)


def _sse(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


class _Handler:
    """The request handler of one fake app (state lives on the app)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        script = self._app[FAKE_SCRIPT]
        stats = self._app[FAKE_STATS]
        number, body = await record_request(request, stats)
        if not isinstance(body, dict):
            return _error_response(
                400,
                {
                    "message": "We could not parse the JSON body of your request.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                },
            )

        fault: str = request.headers.get(FAULT_HEADER, script.fault)
        if fault not in FAULTS:
            return _error_response(
                400,
                {
                    "message": f"unknown {FAULT_HEADER} {fault!r}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                },
            )
        if fault == "refuse":
            return refuse(request)
        if fault in _FAULT_STATUS:
            status = _FAULT_STATUS[fault]
            headers = retry_after_headers(status, script.retry_after)
            return _error_response(status, _ERROR_BODIES[status], headers)

        model = str(body.get("model") or request.match_info.get("deployment") or "fake-model")
        ident = f"chatcmpl-fake{number}"
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )

        tools = calls_tools(script, body)
        chunks = list(script.tool_preamble) if tools else script.chunks
        partial = trailing_assistant(body.get("messages"))
        if partial is not None:
            chunks = continue_from(chunks, partial, script.prefill_overlap)
        resp: web.StreamResponse | None = None
        async with track_stream(request, stats):
            if body.get("stream"):
                resp = web.StreamResponse(
                    headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                )
                await resp.prepare(request)
                await self._stream(
                    request, resp, script, chunks, fault, ident, model, include_usage, tools
                )
            else:
                resp = await self._complete(request, script, chunks, fault, ident, model, tools)
        return resp if resp is not None else web.Response()

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        script: FakeOpenAIScript,
        answer: list[str],
        fault: str,
        ident: str,
        model: str,
        include_usage: bool,
        tools: bool = False,
    ) -> None:
        created = int(time.time())
        head = (
            f'{{"id":"{ident}","object":"chat.completion.chunk","created":{created},'
            f'"model":{json.dumps(model)},"system_fingerprint":"fp_fake","choices":'
        )
        split = script.split_events

        async def send(choices: str, extra: str = "") -> None:
            event = f'data: {head}{choices}{extra},"sluice_sent_ns":{time.time_ns()}}}\n\n'
            data = event.encode()
            if split:
                half = len(data) // 2
                await resp.write(data[:half])
                await asyncio.sleep(0.001)
                await resp.write(data[half:])
            else:
                await resp.write(data)

        def choice(delta: str, finish: str | None = None) -> str:
            reason = "null" if finish is None else f'"{finish}"'
            return f'[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{reason}}}]'

        if fault == "stall_before_first":
            await stall_until_client_gone(request)
            return
        if fault == "empty_choices":
            await send("[]", ',"prompt_filter_results":[{"prompt_index":0}]')
        await send(choice('{"role":"assistant","content":""}'))

        chunks = [] if fault == "empty" else answer
        limit = script.fault_after_chunks
        sent = 0
        for text in chunks:
            if (fault in MID_STREAM_FAULTS or (fault in TOOL_FAULTS and not tools)) and (
                sent >= limit
            ):
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            if fault == "empty_data":
                await resp.write(b"data: \n\n: keep-alive\n\n")
            elif fault == "empty_choices":
                await send("[]")
            await send(choice(json.dumps({"content": text})))
            sent += 1

        if tools and fault not in MID_STREAM_FAULTS:
            for index, call in enumerate(script.tool_calls):
                pieces = _pieces(call.arguments, call.pieces)
                cut = fault in TOOL_FAULTS and index == script.fault_in_call
                if cut:
                    pieces = pieces[: max(1, len(pieces) // 2)]
                    if len(pieces) == 1 and len(call.arguments) > 1:
                        pieces = [call.arguments[: len(call.arguments) // 2]]
                for at, piece in enumerate(pieces):
                    fragment: dict[str, Any] = {"index": index, "function": {"arguments": piece}}
                    if at == 0:
                        fragment["id"] = call.id or f"call_fake{index}"
                        fragment["type"] = "function"
                        fragment["function"]["name"] = call.name
                    if script.delay:
                        await asyncio.sleep(script.delay)
                    await send(choice(json.dumps({"tool_calls": [fragment]})))
                    sent += 1
                if cut:
                    await resp.write_eof()
                    return
        if fault == "stall_mid_stream":
            await stall_until_client_gone(request)
            return
        if fault == "truncated" or (fault in TOOL_FAULTS and not tools):
            await resp.write_eof()
            return
        if fault == "malformed":
            await resp.write(b'data: {"id": "chatcmpl-broken", "choices": [\n\n')
            await resp.write_eof(_sse("[DONE]"))
            return
        if fault == "error_mid_stream":
            await resp.write_eof(_sse(json.dumps({"error": _ERROR_BODIES[500]})))
            return

        await send(choice("{}", "tool_calls" if tools else script.finish_reason))
        if include_usage:
            usage = self._usage(script, sent)
            await send("[]", f',"usage":{json.dumps(usage)}')
        if fault == "empty_data":
            await resp.write(b"data:\n\n")
        await resp.write_eof(_sse("[DONE]"))

    async def _complete(
        self,
        request: web.Request,
        script: FakeOpenAIScript,
        answer: list[str],
        fault: str,
        ident: str,
        model: str,
        tools: bool = False,
    ) -> web.StreamResponse:
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
        content: str | None = "" if fault == "empty" else "".join(answer)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if tools:
            message["content"] = content or None
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_fake{index}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for index, call in enumerate(script.tool_calls)
            ]
        choices: list[dict[str, Any]] = [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tools else script.finish_reason,
            }
        ]
        payload = {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [] if fault == "empty_choices" else choices,
            "usage": self._usage(script, 0 if fault == "empty" else len(answer)),
        }
        data = json.dumps(payload).encode()
        if fault == "malformed":
            return web.Response(
                body=b'{"id": "chatcmpl-broken", "choices": [', content_type="application/json"
            )
        if fault in ("stall_mid_stream", "truncated", "error_mid_stream", "cut_in_tool_call"):
            return await half_body(request, data, stall=fault == "stall_mid_stream")
        return web.Response(body=data, content_type="application/json")

    @staticmethod
    def _usage(script: FakeOpenAIScript, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": script.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": script.prompt_tokens + completion_tokens,
        }


def make_fake_openai_app(
    script: FakeOpenAIScript | None = None, *, prefix: str = "/v1"
) -> web.Application:
    """Build the fake's aiohttp app: requests in, scripted OpenAI answers out.

    Routes: `POST {prefix}/chat/completions` and Azure's
    `POST /openai/deployments/{deployment}/chat/completions`. The script and stats
    live in `app[FAKE_SCRIPT]` and `app[FAKE_STATS]`.
    """
    script = script if script is not None else FakeOpenAIScript()
    app = fake_app(FAKE_SCRIPT, script, FAKE_STATS, FakeOpenAIStats())
    handler = _Handler(app)
    app.router.add_post(f"{prefix.rstrip('/')}/chat/completions", handler.handle)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", handler.handle)
    return app


@dataclass(frozen=True)
class FakeOpenAI(RunningStreamFake[FakeOpenAIScript, FakeOpenAIStats]):
    """A running fake: `url` is the OpenAI base URL (with prefix), `root` the bare origin."""

    root: str
    script_key = FAKE_SCRIPT
    stats_key = FAKE_STATS


@asynccontextmanager
async def run_fake_openai(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    script: FakeOpenAIScript | None = None,
    prefix: str = "/v1",
) -> AsyncIterator[FakeOpenAI]:
    """Serve the fake on `host:port` (0 picks a free port) for the `async with` body.

    Yields a `FakeOpenAI`; on exit the listener closes and stalled responses end.
    """
    app = make_fake_openai_app(script, prefix=prefix)
    async with serve_app(app, host, port) as root:
        yield FakeOpenAI(url=f"{root}{prefix.rstrip('/')}", root=root, app=app)


def main(argv: list[str] | None = None) -> None:
    """Command line entry: parse flags, serve until SIGINT/SIGTERM."""
    parser = cli_parser(
        "Fake OpenAI-compatible chat server", port=9100, faults=FAULTS, unit="content chunk"
    )
    parser.add_argument("--prefix", default="/v1")
    parser.add_argument("--finish-reason", choices=get_args(FakeFinishReason), default="stop")
    args = parser.parse_args(argv)
    script = FakeOpenAIScript(
        chunks=cli_chunks(args.chunks),
        delay=args.delay,
        fault=args.fault,
        finish_reason=args.finish_reason,
    )
    serve_until_signalled(
        lambda: run_fake_openai(host=args.host, port=args.port, script=script, prefix=args.prefix),
        "OpenAI",
    )


if __name__ == "__main__":
    main()
