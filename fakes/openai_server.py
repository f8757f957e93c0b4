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

import argparse
import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from aiohttp import web

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
    "empty",
    "empty_choices",
    "empty_data",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)

FakeFinishReason = Literal["stop", "length", "content_filter", "tool_calls"]

FAULT_HEADER = "x-fake-fault"

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
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " fake"])
    delay: float = 0.0
    finish_reason: FakeFinishReason = "stop"
    fault: Fault = "none"
    fault_after_chunks: int = 1
    retry_after: str | None = "1"
    prompt_tokens: int = 7
    split_events: bool = False


@dataclass
class FakeOpenAIStats:
    """What the fake has seen; every counter only grows except `open_streams`.

    A "stream" is any 200 response the fake is producing (SSE or a JSON body
    still being written); `streams_closed_by_client` counts those the client
    abandoned before the fake finished, detected by a failed write, the handler's
    cancellation or the transport closing while stalled.
    """

    requests: int = 0
    last_body: dict[str, Any] | None = None
    last_headers: dict[str, str] = field(default_factory=dict)
    last_path: str = ""
    last_query: dict[str, str] = field(default_factory=dict)
    open_streams: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_closed_by_client: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def notify(self) -> None:
        """Wake the `wait_*` helpers after a counter changed."""
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], within: float = 1.0) -> None:
        """Return once `predicate()` holds; raise TimeoutError after `within` seconds."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_stream_closed(self, within: float = 1.0, count: int = 1) -> None:
        """Return once `count` streams in total were closed by the client (else TimeoutError)."""
        await self.wait_until(lambda: self.streams_closed_by_client >= count, within)

    async def wait_idle(self, within: float = 1.0) -> None:
        """Return once no stream is open (else TimeoutError)."""
        await self.wait_until(lambda: self.open_streams == 0, within)


FAKE_SCRIPT = web.AppKey("fake_openai_script", FakeOpenAIScript)
FAKE_STATS = web.AppKey("fake_openai_stats", FakeOpenAIStats)
_STOPPING = web.AppKey("fake_openai_stopping", asyncio.Event)


class _ClientGone(Exception):
    """The peer closed the connection while the fake was stalled."""


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
        stats.requests += 1
        number = stats.requests
        stats.last_headers = dict(request.headers)
        stats.last_path = request.path
        stats.last_query = dict(request.query)
        try:
            body = await request.json()
        except ValueError:
            body = None
        stats.last_body = body if isinstance(body, dict) else None
        stats.notify()
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
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never written: the transport is gone
        if fault in _FAULT_STATUS:
            status = _FAULT_STATUS[fault]
            headers: dict[str, str] = {}
            if status == 429 and script.retry_after is not None:
                headers["Retry-After"] = script.retry_after
            return _error_response(status, _ERROR_BODIES[status], headers)

        model = str(body.get("model") or request.match_info.get("deployment") or "fake-model")
        ident = f"chatcmpl-fake{number}"
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )

        stats.open_streams += 1
        stats.streams_started += 1
        stats.notify()
        resp: web.StreamResponse | None = None
        try:
            if body.get("stream"):
                resp = web.StreamResponse(
                    headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                )
                await resp.prepare(request)
                await self._stream(request, resp, script, fault, ident, model, include_usage)
            else:
                resp = await self._complete(request, script, fault, ident, model)
        except (ConnectionResetError, _ClientGone):
            stats.streams_closed_by_client += 1
            return resp if resp is not None else web.Response()
        except asyncio.CancelledError:
            if not self._app[_STOPPING].is_set():
                stats.streams_closed_by_client += 1
            raise
        else:
            if not self._app[_STOPPING].is_set():
                stats.streams_completed += 1
            return resp
        finally:
            stats.open_streams -= 1
            stats.notify()

    async def _stall(self, request: web.Request) -> None:
        """Wait until the client goes away (raise _ClientGone) or the server stops."""
        stopping = self._app[_STOPPING]
        while not stopping.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                raise _ClientGone
            await asyncio.sleep(0.005)

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        script: FakeOpenAIScript,
        fault: str,
        ident: str,
        model: str,
        include_usage: bool,
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
            await self._stall(request)
            return
        if fault == "empty_choices":
            await send("[]", ',"prompt_filter_results":[{"prompt_index":0}]')
        await send(choice('{"role":"assistant","content":""}'))

        chunks = [] if fault == "empty" else script.chunks
        limit = script.fault_after_chunks
        sent = 0
        for text in chunks:
            if fault in ("stall_mid_stream", "truncated", "malformed") and sent >= limit:
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            if fault == "empty_data":
                await resp.write(b"data: \n\n: keep-alive\n\n")
            elif fault == "empty_choices":
                await send("[]")
            await send(choice(json.dumps({"content": text})))
            sent += 1

        if fault == "stall_mid_stream":
            await self._stall(request)
            return
        if fault == "truncated":
            await resp.write_eof()
            return
        if fault == "malformed":
            await resp.write(b'data: {"id": "chatcmpl-broken", "choices": [\n\n')
            await resp.write_eof(_sse("[DONE]"))
            return

        await send(choice("{}", script.finish_reason))
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
        fault: str,
        ident: str,
        model: str,
    ) -> web.StreamResponse:
        if fault == "stall_before_first":
            await self._stall(request)
        content = "" if fault == "empty" else "".join(script.chunks)
        choices: list[dict[str, Any]] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": script.finish_reason,
            }
        ]
        payload = {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [] if fault == "empty_choices" else choices,
            "usage": self._usage(script, 0 if fault == "empty" else len(script.chunks)),
        }
        data = json.dumps(payload).encode()
        if fault == "malformed":
            return web.Response(
                body=b'{"id": "chatcmpl-broken", "choices": [', content_type="application/json"
            )
        if fault in ("stall_mid_stream", "truncated"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            if fault == "stall_mid_stream":
                await self._stall(request)
            elif request.transport is not None:
                request.transport.close()
            return resp
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
    app = web.Application()
    app[FAKE_SCRIPT] = script if script is not None else FakeOpenAIScript()
    app[FAKE_STATS] = FakeOpenAIStats()
    app[_STOPPING] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[_STOPPING].set()

    app.on_shutdown.append(on_shutdown)
    handler = _Handler(app)
    app.router.add_post(f"{prefix.rstrip('/')}/chat/completions", handler.handle)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", handler.handle)
    return app


@dataclass(frozen=True)
class FakeOpenAI:
    """A running fake: `url` is the OpenAI base URL (with prefix), `root` the bare origin."""

    url: str
    root: str
    app: web.Application

    @property
    def script(self) -> FakeOpenAIScript:
        """The live script; mutate it to change the next answers."""
        return self.app[FAKE_SCRIPT]

    @property
    def stats(self) -> FakeOpenAIStats:
        """What the fake has recorded so far."""
        return self.app[FAKE_STATS]

    async def wait_stream_closed(self, within: float = 1.0, count: int = 1) -> None:
        """Return once `count` streams were closed by the client (else TimeoutError)."""
        await self.stats.wait_stream_closed(within, count)


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
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        root = f"http://{host}:{bound_port}"
        yield FakeOpenAI(url=f"{root}{prefix.rstrip('/')}", root=root, app=app)
    finally:
        await runner.cleanup()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible chat server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--prefix", default="/v1")
    parser.add_argument("--chunks", type=int, default=3, help="content chunks per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each chunk")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--finish-reason", choices=get_args(FakeFinishReason), default="stop")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    script = FakeOpenAIScript(
        chunks=[f"tok{i} " for i in range(args.chunks)],
        delay=args.delay,
        fault=args.fault,
        finish_reason=args.finish_reason,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with run_fake_openai(
        host=args.host, port=args.port, script=script, prefix=args.prefix
    ) as fake:
        print(f"fake OpenAI listening on {fake.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line entry: parse flags, serve until SIGINT/SIGTERM."""
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
