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

    async with run_fake_gemini() as fake:
        fake.script.fault = "http_429"
        ...  # configure GeminiConfig(base_url=fake.url, ...)
        await fake.wait_stream_closed(within=1.0)

Standalone: `python -m fakes.gemini_server --port 9300 --chunks 50 --delay 0.02`.
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
    fake_app,
    half_body,
    record_request,
    refuse,
    serve_app,
    serve_until_signalled,
    stall_until_client_gone,
    track_stream,
)

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
    "STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "OTHER"
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
        cut = fault in ("stall_mid_stream", "truncated", "error_event", "malformed")
        sent = 0
        for event in events:
            if cut and sent >= script.fault_after_chunks:
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
