"""The load client: one process that drives one target and measures every chunk.

In: a JSON spec (first argument). Out: one JSON object on stdout's last line.

Targets, all reading the same stamped upstream (see `benchmarks.upstream`):
- `sse` — an OpenAI-style `POST .../chat/completions` with `stream: true`, read as SSE
  with aiohttp: the upstream itself ("direct") or an HTTP gateway (the peer).
- `chatstream` — Sluice's chatStream websocket (DESIGN section 3), `per_socket`
  requests multiplexed on each socket.
- `idle` — open `count` chatStream websockets, print `ready <opened> <failed>`, hold
  them until a line arrives on stdin (or `hold` seconds pass), then close.

A load run is closed-loop: `concurrency` workers each run requests back to back,
their starts spread over `ramp` seconds (and over every 20 ms beat) so paced streams
are not in phase. Samples count only when they arrive inside the window
`[start + warmup, start + warmup + duration]`; at its end every request still open
is cancelled (the gateway sees the client go away). Per chunk the client records
`receive time - the upstream's stamp` (both `time.time_ns()` on this machine); per
request, the time from sending it to its first content chunk. At the window's
edges it reads `/proc/<pid>/stat` of every `watch` pid, so CPU is counted over
exactly the window the chunks are counted in, and `/proc/stat`'s busy time per core,
so work by anything else on the machine during the window shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from benchmarks.common import core_busy_seconds, cpu_seconds

try:
    import orjson

    loads: Callable[[str | bytes], Any] = orjson.loads
    JSON_LIB = "orjson"
except ImportError:  # pragma: no cover - orjson is optional
    loads = json.loads
    JSON_LIB = "json"

CHAT_BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True}
QUANTILES = sorted(
    {*np.linspace(0.0, 0.99, 100).round(4), *np.linspace(0.991, 0.999, 9).round(4), 0.9995, 1.0}
)
"""Where each distribution's CDF is sampled (dense in the tail) for the plots."""


@dataclass
class Request:
    """One request in flight: when it was sent and how many content chunks came back."""

    sent_ns: int
    chunks: int = 0
    done: asyncio.Future[bool] | None = None


@dataclass
class Recorder:
    """Samples inside the window `[lo_ns, hi_ns]`; counts outside it only in totals."""

    lo_ns: int
    hi_ns: int
    later: array[int] = field(default_factory=lambda: array("q"))
    first: array[int] = field(default_factory=lambda: array("q"))
    ttfc: array[int] = field(default_factory=lambda: array("q"))
    chunks: int = 0
    chunks_total: int = 0
    requests: int = 0
    requests_total: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def chunk(self, request: Request, recv_ns: int, stamp_ns: int) -> None:
        """A content chunk of `request` arrived at `recv_ns`; the upstream sent it at stamp."""
        self.chunks_total += 1
        if self.lo_ns <= recv_ns <= self.hi_ns:
            self.chunks += 1
            if request.chunks == 0:
                self.first.append(recv_ns - stamp_ns)
                if request.sent_ns >= self.lo_ns:
                    self.ttfc.append(recv_ns - request.sent_ns)
            else:
                self.later.append(recv_ns - stamp_ns)
        request.chunks += 1

    def finished(self, recv_ns: int) -> None:
        """A request ended with its terminal frame / `[DONE]`."""
        self.requests_total += 1
        if self.lo_ns <= recv_ns <= self.hi_ns:
            self.requests += 1

    def error(self, what: str) -> None:
        """A request failed (HTTP status, error frame, broken connection)."""
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


def summarize(values_ns: array[int] | list[int]) -> dict[str, Any]:
    """Nanosecond samples -> count, mean, p50/p90/p99/p99.9/max and a CDF, in ms."""
    if len(values_ns) == 0:
        return {"count": 0}
    ms = np.frombuffer(values_ns, dtype=np.int64) if isinstance(values_ns, array) else None
    data = (ms if ms is not None else np.asarray(values_ns, dtype=np.int64)) / 1e6
    points = np.quantile(data, QUANTILES)
    return {
        "count": int(data.size),
        "mean": round(float(data.mean()), 4),
        "p50": round(float(np.quantile(data, 0.5)), 4),
        "p90": round(float(np.quantile(data, 0.9)), 4),
        "p99": round(float(np.quantile(data, 0.99)), 4),
        "p999": round(float(np.quantile(data, 0.999)), 4),
        "max": round(float(data.max()), 4),
        "cdf": {"q": [float(q) for q in QUANTILES], "ms": [round(float(v), 4) for v in points]},
    }


def _stamp_of_event(event: Any) -> int | None:
    """The upstream's stamp in an OpenAI chunk event, or None for a non-content event."""
    choices = event.get("choices")
    if not choices:
        return None
    content = choices[0].get("delta", {}).get("content")
    return int(content) if content else None


async def _sse_worker(
    session: aiohttp.ClientSession,
    spec: dict[str, Any],
    rec: Recorder,
    delay: float,
) -> None:
    await asyncio.sleep(delay)
    url = spec["url"]
    headers = {"Content-Type": "application/json", **spec.get("headers", {})}
    body = json.dumps(CHAT_BODY).encode()
    while True:
        request = Request(time.time_ns())
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    rec.error(f"HTTP {resp.status}: {(await resp.text())[:200]}")
                    await asyncio.sleep(0.05)
                    continue
                done = False
                async for line in resp.content:
                    if not line.startswith(b"data:"):
                        continue
                    recv = time.time_ns()
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    stamp = _stamp_of_event(loads(payload))
                    if stamp is not None:
                        rec.chunk(request, recv, stamp)
                if done:
                    rec.finished(time.time_ns())
                else:
                    rec.error("stream ended before [DONE]")
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            rec.error(f"{type(error).__name__}: {error}")
            await asyncio.sleep(0.05)


class _Socket:
    """One chatStream websocket: its single reader settles the requests it carries."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, rec: Recorder) -> None:
        self.ws = ws
        self.rec = rec
        self.pending: dict[str, Request] = {}
        self.lock = asyncio.Lock()

    async def read(self) -> None:
        rec = self.rec
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                recv = time.time_ns()
                frame = loads(msg.data)
                request = self.pending.get(frame.get("request_id"))
                if request is None:
                    continue
                terminal = False
                if frame.get("type") == "chunk":
                    chunk = frame["chunk"]
                    content = chunk["model_response"]["message"].get("content")
                    if content:
                        rec.chunk(request, recv, int(content))
                    if "finish_reason" in chunk:
                        terminal = True
                        rec.finished(recv)
                elif frame.get("type") == "error":
                    error = frame["error"]
                    rec.error(f"{error.get('name')}: {error.get('message')}")
                    terminal = "finish_reason" in error
                if terminal:
                    del self.pending[frame["request_id"]]
                    if request.done is not None and not request.done.done():
                        request.done.set_result(True)
        finally:
            for request in self.pending.values():
                if request.done is not None and not request.done.done():
                    request.done.set_result(False)
            self.pending.clear()


async def _ws_worker(sock: _Socket, name: str, shared: bool, delay: float) -> None:
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    number = 0
    while True:
        number += 1
        rid = f"{name}-{number}"
        frame = '{"request_id":"%s","message":{"role":"user","content":"hi"}}' % rid  # noqa: UP031
        request = Request(time.time_ns(), done=loop.create_future())
        sock.pending[rid] = request
        if shared:
            async with sock.lock:
                await sock.ws.send_str(frame)
        else:
            await sock.ws.send_str(frame)
        assert request.done is not None
        if not await request.done:
            sock.rec.error("socket closed")
            return


async def _connect_all(
    session: aiohttp.ClientSession, url: str, count: int, parallel: int = 64
) -> tuple[list[aiohttp.ClientWebSocketResponse], list[str]]:
    gate = asyncio.Semaphore(parallel)
    failures: list[str] = []

    async def one() -> aiohttp.ClientWebSocketResponse | None:
        async with gate:
            for attempt in range(3):
                try:
                    return await session.ws_connect(url, max_msg_size=0, autoping=True)
                except (aiohttp.ClientError, OSError, TimeoutError) as error:
                    if attempt == 2:
                        failures.append(f"{type(error).__name__}: {error}")
                    await asyncio.sleep(0.1)
            return None

    results = await asyncio.gather(*(one() for _ in range(count)))
    return [ws for ws in results if ws is not None], failures


def _start_delay(worker: int, ramp: float) -> float:
    """Worker `worker`'s start offset in [0, ramp): a golden-ratio sequence, so starts are
    spread evenly over the ramp *and* over every shorter period (a paced stream's 20 ms
    beat), instead of landing on a few shared phases as evenly spaced starts would."""
    return ramp * ((worker * 0.6180339887498949) % 1.0)


def _watch(pids: dict[str, int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, pid in pids.items():
        try:
            out[name] = cpu_seconds(pid)
        except OSError:
            out[name] = None
    return out


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Drive `spec["target"]` for the window and return every figure the client saw."""
    concurrency = int(spec["concurrency"])
    warmup = float(spec.get("warmup", 1.0))
    duration = float(spec["duration"])
    ramp = float(spec.get("ramp", warmup))
    watch = {**spec.get("watch", {}), "client": os.getpid()}
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sockets: list[_Socket] = []
        connect_failures: list[str] = []
        rec = Recorder(0, 0)
        if spec["target"] == "chatstream":
            per_socket = max(1, int(spec.get("per_socket", 1)))
            count = -(-concurrency // per_socket)
            opened, connect_failures = await _connect_all(session, spec["url"], count)
            sockets = [_Socket(ws, rec) for ws in opened]
        start = time.time_ns()
        rec.lo_ns = start + int(warmup * 1e9)
        rec.hi_ns = rec.lo_ns + int(duration * 1e9)
        if spec["target"] == "chatstream":
            per_socket = max(1, int(spec.get("per_socket", 1)))
            tasks += [asyncio.create_task(s.read()) for s in sockets]
            for i in range(min(concurrency, len(sockets) * per_socket)):
                sock = sockets[i // per_socket]
                delay = _start_delay(i, ramp)
                tasks.append(asyncio.create_task(_ws_worker(sock, f"w{i}", per_socket > 1, delay)))
        else:
            for i in range(concurrency):
                delay = _start_delay(i, ramp)
                tasks.append(asyncio.create_task(_sse_worker(session, spec, rec, delay)))
        await asyncio.sleep(max(0.0, (rec.lo_ns - time.time_ns()) / 1e9))
        cpu_before, cores_before = _watch(watch), core_busy_seconds()
        wall_before = time.time_ns()
        await asyncio.sleep(max(0.0, (rec.hi_ns - time.time_ns()) / 1e9))
        cpu_after, cores_after = _watch(watch), core_busy_seconds()
        wall_after = time.time_ns()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(s.ws.close() for s in sockets), return_exceptions=True)
    window = (wall_after - wall_before) / 1e9
    cpu = {
        name: (
            round(after - before, 4)
            if (before := cpu_before.get(name)) is not None and after is not None
            else None
        )
        for name, after in cpu_after.items()
    }
    return {
        "target": spec["target"],
        "concurrency": concurrency,
        "window_s": round(window, 4),
        "chunks": rec.chunks,
        "chunks_total": rec.chunks_total,
        "requests": rec.requests,
        "requests_total": rec.requests_total,
        "errors": rec.errors,
        "error_samples": rec.error_samples + connect_failures[:3],
        "connect_failures": len(connect_failures),
        "chunks_per_s": round(rec.chunks / window, 2) if window else None,
        "requests_per_s": round(rec.requests / window, 3) if window else None,
        "latency_later_ms": summarize(rec.later),
        "latency_first_ms": summarize(rec.first),
        "ttfc_ms": summarize(rec.ttfc),
        "cpu_s": cpu,
        "core_busy_s": {
            core: round(cores_after[core] - cores_before.get(core, 0.0), 3) for core in cores_after
        },
        "json_lib": JSON_LIB,
    }


async def run_idle(spec: dict[str, Any]) -> dict[str, Any]:
    """Open `count` idle chatStream sockets, report `ready`, hold until told (stdin) to close."""
    count = int(spec["count"])
    hold = float(spec.get("hold", 120.0))
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        opened, failures = await _connect_all(session, spec["url"], count)
        took = time.monotonic() - started
        print(f"ready {len(opened)} {len(failures)}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), hold)
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return {
        "opened": len(opened),
        "failed": len(failures),
        "connect_s": round(took, 3),
        "error_samples": failures[:3],
    }


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.loadgen '<spec json>'`: run it, print the result as JSON."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    _raise_fd_limit(int(spec.get("count", spec.get("concurrency", 0))) * 2 + 256)
    runner = run_idle if spec["target"] == "idle" else run_load
    result = asyncio.run(runner(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
