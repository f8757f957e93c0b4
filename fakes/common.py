"""What every fake vendor server shares: stats, stalls, stream bookkeeping, serving.

A fake's handler flows like this, with each step one helper here:

    request -> record_request (stats) -> refuse / error with retry_after_headers
            -> track_stream (open, then completed or closed_by_client)
               -> stall_until_client_gone / half_body for the stall and cut faults

`fake_app` builds the app (script, stats and the STOPPING event set on shutdown),
`serve_app` runs it on a loopback port and yields its root URL, `RunningFake` is
the base of the objects the `run_fake_*` context managers yield, and
`cli_parser` / `serve_until_signalled` are the `python -m fakes.X` scaffolding.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

from aiohttp import web

FAULT_HEADER = "x-fake-fault"
"""The request header that picks a fault for that one request."""

STOPPING = web.AppKey("fake_stopping", asyncio.Event)
"""Set when the fake's app shuts down, so stalled responses end."""


@dataclass
class Waitable:
    """Stats a test can wait on: call `notify()` after a change, `wait_until` to wait."""

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


@dataclass
class FakeStats(Waitable):
    """What a fake has seen; every counter only grows except `open_streams`.

    A "stream" is any 200 response the fake is producing (SSE or a body still
    being written); `streams_closed_by_client` counts those the client
    abandoned before the fake finished, detected by a failed write, the
    handler's cancellation or the transport closing while stalled.
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

    async def wait_stream_closed(self, within: float = 1.0, count: int = 1) -> None:
        """Return once `count` streams in total were closed by the client (else TimeoutError)."""
        await self.wait_until(lambda: self.streams_closed_by_client >= count, within)

    async def wait_idle(self, within: float = 1.0) -> None:
        """Return once no stream is open (else TimeoutError)."""
        await self.wait_until(lambda: self.open_streams == 0, within)


ScriptT = TypeVar("ScriptT")
StatsT = TypeVar("StatsT", bound=Waitable)
FakeStatsT = TypeVar("FakeStatsT", bound=FakeStats)


class ClientGone(Exception):
    """The peer closed the connection while the fake was stalled or writing."""


async def record_request(request: web.Request, stats: FakeStats) -> tuple[int, Any]:
    """Count `request` and note its headers, path, query and JSON object body on `stats`.

    Returns the request's number (1 for the first) and its parsed JSON body
    (None when it is not JSON; `stats.last_body` is None unless it is an object).
    """
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
    return number, body


def continue_from(chunks: Sequence[str], partial: str, overlap: int = 0) -> list[str]:
    """What a model whose whole answer is `chunks` says after the prefill `partial`.

    When the answer starts with `partial`, the rest of it (in the same chunk
    boundaries); otherwise the whole answer (the model goes on in its own words).
    `overlap` repeats that many characters of the prefill's tail first, as a model
    that restates the end of the partial answer does.

    continue_from(["partial", " text", " lost"], "partial") == [" text", " lost"]
    continue_from(["partial", " text", " lost"], "partial", 4) == ["tial", " text", " lost"]
    """
    answer = "".join(chunks)
    start = max(0, len(partial) - overlap) if answer.startswith(partial) else 0
    out: list[str] = []
    position = 0
    for chunk in chunks:
        end = position + len(chunk)
        if end > start:
            out.append(chunk[max(0, start - position) :])
        position = end
    return out


def trailing_assistant(messages: Any) -> str | None:
    """The content of a final assistant message (a prefill), else None."""
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict) and last.get("role") == "assistant":
            content = last.get("content")
            if isinstance(content, str):
                return content
    return None


def refuse(request: web.Request) -> web.Response:
    """The `refuse` fault: close the connection; the returned response is never written."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()


def retry_after_headers(
    status: int, retry_after: str | None, name: str = "Retry-After"
) -> dict[str, str]:
    """The headers of an error response: `{name: retry_after}` on a 429 (unless None)."""
    if status == 429 and retry_after is not None:
        return {name: retry_after}
    return {}


async def stall_until_client_gone(request: web.Request) -> None:
    """Send nothing until the client goes away (raise ClientGone) or the server stops."""
    stopping = request.app[STOPPING]
    while not stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ClientGone
        await asyncio.sleep(0.005)


@asynccontextmanager
async def track_stream(
    request: web.Request, stats: FakeStats, *, completed_while_stopping: bool = False
) -> AsyncIterator[None]:
    """Count the 200 response produced in the `async with` body as one stream.

    On entry the stream is open and started. A body that ends normally counts
    as completed (unless the server is stopping, or `completed_while_stopping`);
    ConnectionResetError or ClientGone count as closed by the client and are
    swallowed; a cancellation counts as closed by the client unless the server
    is stopping, and propagates.
    """
    stopping = request.app[STOPPING]
    stats.open_streams += 1
    stats.streams_started += 1
    stats.notify()
    try:
        yield
    except (ConnectionResetError, ClientGone):
        stats.streams_closed_by_client += 1
    except asyncio.CancelledError:
        if not stopping.is_set():
            stats.streams_closed_by_client += 1
        raise
    else:
        if completed_while_stopping or not stopping.is_set():
            stats.streams_completed += 1
    finally:
        stats.open_streams -= 1
        stats.notify()


async def half_body(
    request: web.Request,
    data: bytes,
    *,
    stall: bool,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """A JSON 200 promising `len(data)` bytes but sending half of them.

    Then it stalls until the client goes away (`stall`, raising ClientGone) or
    cuts the connection (the `truncated` fault).
    """
    resp = web.StreamResponse(headers={"Content-Type": "application/json", **(headers or {})})
    resp.content_length = len(data)
    await resp.prepare(request)
    await resp.write(data[: len(data) // 2])
    if stall:
        await stall_until_client_gone(request)
    elif request.transport is not None:
        request.transport.close()
    return resp


def fake_app(
    script_key: web.AppKey[ScriptT],
    script: ScriptT,
    stats_key: web.AppKey[StatsT],
    stats: StatsT,
) -> web.Application:
    """A fresh app holding `script`, `stats` and a STOPPING event set on shutdown."""
    app = web.Application()
    app[script_key] = script
    app[stats_key] = stats
    app[STOPPING] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(on_shutdown)
    return app


@asynccontextmanager
async def serve_app(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 2.0
) -> AsyncIterator[str]:
    """Serve `app` on `host:port` (0 picks a free port) for the `async with` body.

    Yields the bound root URL (`http://host:port`); on exit the listener closes
    and stalled responses end.
    """
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class RunningFake(Generic[ScriptT, StatsT]):
    """A running fake: `url` is the base URL to configure, `app` its aiohttp app.

    Subclasses name the app keys of their script and stats.
    """

    url: str
    app: web.Application
    script_key: ClassVar[web.AppKey[Any]]
    stats_key: ClassVar[web.AppKey[Any]]

    @property
    def script(self) -> ScriptT:
        """The live script; mutate it to change the next answers."""
        return cast(ScriptT, self.app[self.script_key])

    @property
    def stats(self) -> StatsT:
        """What the fake has recorded so far."""
        return cast(StatsT, self.app[self.stats_key])


@dataclass(frozen=True)
class RunningStreamFake(RunningFake[ScriptT, FakeStatsT]):
    """A running fake whose stats count streams, with a wait for abandoned ones."""

    async def wait_stream_closed(self, within: float = 1.0, count: int = 1) -> None:
        """Return once `count` streams were closed by the client (else TimeoutError)."""
        await self.stats.wait_stream_closed(within, count)


def cli_parser(
    description: str, *, port: int, faults: Sequence[str], unit: str
) -> argparse.ArgumentParser:
    """The flags every fake's CLI takes: --host, --port, --chunks, --delay, --fault.

    `unit` names one chunk in the help text, e.g. "text delta".
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--chunks", type=int, default=3, help=f"{unit}s per answer")
    noun = unit.split()[-1]
    parser.add_argument("--delay", type=float, default=0.0, help=f"seconds before each {noun}")
    parser.add_argument("--fault", choices=faults, default="none")
    return parser


def cli_chunks(count: int) -> list[str]:
    """The chunks a CLI-started fake sends: `tok0 `, `tok1 `, ..."""
    return [f"tok{i} " for i in range(count)]


def serve_until_signalled(
    open_fake: Callable[[], AbstractAsyncContextManager[RunningFake[Any, Any]]], name: str
) -> None:
    """Run `open_fake()` until SIGINT/SIGTERM, printing `fake {name} listening on {url}`."""

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with open_fake() as fake:
            print(f"fake {name} listening on {fake.url}", flush=True)
            await stop.wait()

    asyncio.run(serve())
