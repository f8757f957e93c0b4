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

Standalone: `python -m fakes.anthropic_server --port 9200 --chunks 50 --delay 0.02`.
"""

from __future__ import annotations

import asyncio
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
        block = {"type": "text", "text": ""}
        await resp.write(_event("content_block_start", {"index": index, "content_block": block}))
        await resp.write(_event("ping", {}))

        chunks = [] if fault == "empty" else answer
        sent = 0
        for text in chunks:
            if fault in ("stall_mid_stream", "truncated", "error_event", "malformed") and (
                sent >= script.fault_after_chunks
            ):
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            delta = {"type": "text_delta", "text": text}
            await resp.write(_event("content_block_delta", {"index": index, "delta": delta}))
            sent += 1

        if fault == "stall_mid_stream":
            await stall_until_client_gone(request)
            return
        if fault == "truncated":
            await resp.write_eof()
            return
        if fault == "error_event":
            error = {"type": script.error_type, "message": "Overloaded"}
            await resp.write_eof(_event("error", {"error": error}))
            return
        if fault == "malformed":
            await resp.write(b'event: content_block_delta\ndata: {"type": "content_block_del\n\n')
            await resp.write_eof(_event("message_stop", {}))
            return

        await resp.write(_event("content_block_stop", {"index": index}))
        await resp.write(
            _event(
                "message_delta",
                {
                    "delta": {"stop_reason": script.stop_reason, "stop_sequence": None},
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
        payload = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": script.stop_reason,
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
