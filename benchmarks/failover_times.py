"""How long a chatStream client waits when Sluice fails over, per fault kind.

Sluice runs in-process (`build_app` behind an aiohttp `AppRunner` on 127.0.0.1)
with the DEFAULT client deadlines, retry and health settings: each model sets only
`base_url` and `api_key`. Its router is `[faulty, healthy]` (priority), both fake
OpenAI servers on loopback.

For every fault kind the figure is the time from sending the chatStream request to
the first chunk of the healthy model's answer (the time to fail over); `none` is
the baseline, the first chunk with no fault at all. Health is reset before each
sequential request so every request goes through the failover it measures (without
the reset the error budget, a 429 or a 401 would take the faulty model out and
later requests would go straight to the healthy one, at baseline speed).

Stalls wait for a deadline: `stall_before_first` for `first_chunk_timeout` (30 s by
default) and `stall_mid_stream` for `idle_timeout` (30 s); those kinds run a few
requests concurrently, so the whole script takes about 45 s. A second table gives
the time to `all_models_unavailable` when both models fail (fast faults only): the
retry passes' backoff (2 s, 4 s, 5 s with 10 % jitter by default) dominates it.

A third table gives the time an answer loses at a mid-stream switch, for both
`mid_stream` modes: both fakes say the same 20-chunk answer paced 10 ms a chunk,
the faulty one breaks after 10 chunks (EOF, or an `{"error": ...}` event). The
figure is the gap the client sees, from the faulty model's last chunk to the first
chunk that carries text beyond what it already had: with `continue` the healthy
model's first chunk; with `restart` the restarted answer's chunk that passes the
point where the first one broke (the client re-reads the partial answer first).

    .venv/bin/python -m benchmarks.failover_times [--requests 20] [--skip-stalls]
    .venv/bin/python -m benchmarks.failover_times --only-switch [--switch-requests 50]

Prints Markdown tables; writes JSON to benchmarks/results/failover_times.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from config.models import ClientConfig, HealthConfig, LanguageModelConfig, RetryConfig, SluiceConfig
from fakes.openai_server import FakeOpenAI, Fault, run_fake_openai
from server import GATEWAY, build_app

ROUTER = "bench"
RESULTS = Path(__file__).resolve().parent / "results" / "failover_times.json"

FAST_FAULTS: tuple[Fault, ...] = (
    "refuse",
    "http_500",
    "http_429",
    "http_401",
    "truncated",
    "malformed",
    "empty",
)
STALL_FAULTS: tuple[Fault, ...] = ("stall_before_first", "stall_mid_stream")
WHERE: dict[str, str] = {
    "none": "-",
    "refuse": "connection dropped",
    "http_500": "HTTP 500",
    "http_429": "HTTP 429 (Retry-After: 1)",
    "http_401": "HTTP 401",
    "stall_before_first": "no first chunk",
    "stall_mid_stream": "stall after 1 chunk",
    "truncated": "EOF after 1 chunk",
    "malformed": "bad JSON after 1 chunk",
    "empty": "answer without text",
}
MID_STREAM = frozenset({"stall_mid_stream", "truncated", "malformed"})


@dataclass(frozen=True)
class Row:
    """One measured fault kind: figures in milliseconds over `requests` requests."""

    fault: str
    where: str
    requests: int
    concurrent: bool
    p50_ms: float
    max_ms: float
    note: str


def sluice_config(faulty: FakeOpenAI, healthy: FakeOpenAI, **router: Any) -> SluiceConfig:
    """Router `bench` = [faulty, healthy], everything else at its default (or `router`)."""

    def model(model_id: str, fake: FakeOpenAI) -> dict[str, Any]:
        return {"id": model_id, "openai": {"base_url": fake.url, "api_key": "sk-bench-0000"}}

    return SluiceConfig.model_validate(
        {
            "routers": {
                "language": [
                    {
                        "id": ROUTER,
                        "models": [model("faulty", faulty), model("healthy", healthy)],
                        **router,
                    }
                ]
            }
        }
    )


@asynccontextmanager
async def run_sluice(config: SluiceConfig) -> AsyncIterator[tuple[str, web.Application]]:
    """Serve `config` on 127.0.0.1 (a free port) -> (chatStream URL, the app)."""
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}/v1/language/{ROUTER}/chatStream", app
    finally:
        await runner.cleanup()


@asynccontextmanager
async def scenario(fault: Fault) -> AsyncIterator[tuple[str, web.Application]]:
    """Two fresh fakes (the first with `fault`) and a fresh Sluice in front of them."""
    async with AsyncExitStack() as stack:
        faulty = await stack.enter_async_context(run_fake_openai())
        healthy = await stack.enter_async_context(run_fake_openai())
        faulty.script.chunks = ["partial", " answer", " dropped"]
        faulty.script.fault = fault
        healthy.script.chunks = ["Healthy", " answer"]
        yield await stack.enter_async_context(run_sluice(sluice_config(faulty, healthy)))


def chat(request_id: str) -> str:
    """A chatStream request frame."""
    return json.dumps({"request_id": request_id, "message": {"role": "user", "content": "hi"}})


def is_terminal(frame: dict[str, Any]) -> bool:
    """Whether a server frame ends its request."""
    body = frame.get("chunk") if frame["type"] == "chunk" else frame.get("error")
    return isinstance(body, dict) and "finish_reason" in body


async def run_requests(
    ws: aiohttp.ClientWebSocketResponse, request_ids: Sequence[str], target: str | None
) -> dict[str, float]:
    """Send the requests back to back; seconds from each send to its first `target` chunk.

    `target` None takes the first chunk of any model. Reads until every request
    ended and checks that each one ended with a complete answer.
    """
    loop = asyncio.get_running_loop()
    sent: dict[str, float] = {}
    first: dict[str, float] = {}
    for request_id in request_ids:
        sent[request_id] = loop.time()
        await ws.send_str(chat(request_id))
    ended: set[str] = set()
    while len(ended) < len(request_ids):
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"the socket ended early: {msg.type}")
        now = loop.time()
        frame = json.loads(msg.data)
        request_id = frame["request_id"]
        if frame["type"] == "chunk":
            model_id = frame["chunk"]["model_id"]
            if request_id not in first and (target is None or model_id == target):
                first[request_id] = now - sent[request_id]
        if is_terminal(frame):
            if frame["type"] != "chunk" or request_id not in first:
                raise RuntimeError(f"request {request_id} did not fail over: {frame}")
            ended.add(request_id)
    return first


def row(fault: str, seconds: Sequence[float], concurrent: bool, note: str) -> Row:
    """Summarize one fault kind's samples (seconds) as a table row in milliseconds."""
    return Row(
        fault=fault,
        where=WHERE[fault],
        requests=len(seconds),
        concurrent=concurrent,
        p50_ms=round(statistics.median(seconds) * 1000, 1),
        max_ms=round(max(seconds) * 1000, 1),
        note=note,
    )


async def measure_sequential(fault: Fault, requests: int) -> Row:
    """`requests` requests one after another, health reset before each (see module doc)."""
    async with (
        scenario(fault) as (url, app),
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as ws,
    ):
        health = app[GATEWAY].chat_routers[ROUTER].health
        target = None if fault == "none" else "healthy"
        await run_requests(ws, ["warmup"], target)  # pooled upstream connections
        samples: list[float] = []
        for i in range(requests):
            health.reset()  # type: ignore[attr-defined]
            times = await run_requests(ws, [f"r{i}"], target)
            samples.append(times[f"r{i}"])
    note = "baseline: first chunk, no failover" if fault == "none" else ""
    if fault in MID_STREAM:
        note = "partial text, then the healthy model continues it (mid_stream: continue)"
    return row(fault, samples, concurrent=False, note=note)


async def measure_concurrent(fault: Fault, requests: int, deadline: str) -> Row:
    """`requests` requests at once (for the stalls, which wait a whole deadline)."""
    async with (
        scenario(fault) as (url, _app),
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as ws,
    ):
        times = await run_requests(ws, [f"r{i}" for i in range(requests)], "healthy")
    return row(fault, list(times.values()), concurrent=True, note=f"= {deadline}")


async def measure_all_failing(fault: Fault, requests: int) -> Row:
    """Both models have `fault`: seconds until each request's all_models_unavailable."""
    async with AsyncExitStack() as stack:
        fakes = [await stack.enter_async_context(run_fake_openai()) for _ in range(2)]
        for fake in fakes:
            fake.script.fault = fault
        url, _app = await stack.enter_async_context(run_sluice(sluice_config(*fakes)))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        ws = await stack.enter_async_context(session.ws_connect(url))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(requests):
            await ws.send_str(chat(f"x{i}"))
        elapsed: list[float] = []
        while len(elapsed) < requests:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"the socket ended early: {msg.type}")
            frame = json.loads(msg.data)
            if is_terminal(frame):
                name = frame.get("error", {}).get("name")
                if name != "all_models_unavailable":
                    raise RuntimeError(f"expected all_models_unavailable: {frame}")
                elapsed.append(loop.time() - started)
    return row(fault, elapsed, concurrent=True, note="")


SWITCH_ANSWER = [f"w{i:02d} " for i in range(20)]
SWITCH_AFTER = 10
SWITCH_DELAY = 0.01
SWITCH_FAULTS: tuple[Fault, ...] = ("truncated", "error_mid_stream")


@dataclass(frozen=True)
class SwitchRow:
    """Time lost at a mid-stream switch, in milliseconds, for one mode and fault."""

    mode: str
    fault: str
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of `samples`, nearest rank."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def switch_gap(ws: aiohttp.ClientWebSocketResponse, request_id: str) -> float:
    """Send one request; seconds from the faulty model's last chunk to new text after it."""
    loop = asyncio.get_running_loop()
    await ws.send_str(chat(request_id))
    partial = 0
    text = ""
    last_faulty: float | None = None
    gap: float | None = None
    while True:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"the socket ended early: {msg.type}")
        now = loop.time()
        frame = json.loads(msg.data)
        if frame["type"] == "error" and frame["error"]["name"] == "model_unavailable":
            text = ""  # restart: the client drops the partial answer
        elif frame["type"] == "chunk":
            content = frame["chunk"]["model_response"]["message"]["content"]
            if frame["chunk"]["model_id"] == "faulty":
                partial += len(content)
                last_faulty = now
            elif gap is None and last_faulty is not None and len(text) + len(content) > partial:
                gap = now - last_faulty
            text += content
        if is_terminal(frame):
            if text != "".join(SWITCH_ANSWER) or gap is None:
                raise RuntimeError(f"request {request_id} did not switch cleanly: {frame}")
            return gap


async def measure_switch(mode: str, fault: Fault, requests: int) -> SwitchRow:
    """`requests` sequential requests through a mid-stream failure in `mode`."""
    async with AsyncExitStack() as stack:
        faulty = await stack.enter_async_context(run_fake_openai())
        healthy = await stack.enter_async_context(run_fake_openai())
        for fake in (faulty, healthy):
            fake.script.chunks = list(SWITCH_ANSWER)
            fake.script.delay = SWITCH_DELAY
        faulty.script.fault = fault
        faulty.script.fault_after_chunks = SWITCH_AFTER
        url, app = await stack.enter_async_context(
            run_sluice(sluice_config(faulty, healthy, mid_stream=mode))
        )
        session = await stack.enter_async_context(aiohttp.ClientSession())
        ws = await stack.enter_async_context(session.ws_connect(url))
        health = app[GATEWAY].chat_routers[ROUTER].health
        await switch_gap(ws, "warmup")
        samples: list[float] = []
        for i in range(requests):
            health.reset()  # type: ignore[attr-defined]
            samples.append(await switch_gap(ws, f"s{i}"))
    return SwitchRow(
        mode=mode,
        fault=fault,
        requests=requests,
        p50_ms=round(statistics.median(samples) * 1000, 1),
        p99_ms=round(percentile(samples, 0.99) * 1000, 1),
        max_ms=round(max(samples) * 1000, 1),
    )


async def measure_switches(requests: int) -> list[SwitchRow]:
    """Both modes, each switch fault."""
    return [
        await measure_switch(mode, fault, requests)
        for fault in SWITCH_FAULTS
        for mode in ("continue", "restart")
    ]


def switch_markdown(rows: Sequence[SwitchRow]) -> str:
    """The switch rows as a Markdown table."""
    lines = [
        "| mid_stream | fault | requests | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.fault} | {r.requests} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.max_ms:.1f} |"
        )
    return "\n".join(lines)


def defaults() -> dict[str, Any]:
    """The default settings the figures depend on (seconds)."""
    model = LanguageModelConfig.model_validate({"id": "m", "openai": {}})
    return {
        "client": ClientConfig().model_dump(),
        "retry": RetryConfig().model_dump(),
        "health": HealthConfig().model_dump(),
        "error_budget": model.error_budget.model_dump(),
    }


def markdown(rows: Sequence[Row], unit: str = "ms") -> str:
    """The rows as a Markdown table (`unit` ms, or s for the all-failing table)."""
    scale = 1.0 if unit == "ms" else 0.001
    lines = [
        f"| fault | what the faulty model does | requests | p50 ({unit}) | max ({unit}) | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        count = f"{r.requests}{' concurrent' if r.concurrent else ''}"
        p50 = f"{r.p50_ms * scale:.1f}" if unit == "ms" else f"{r.p50_ms * scale:.2f}"
        top = f"{r.max_ms * scale:.1f}" if unit == "ms" else f"{r.max_ms * scale:.2f}"
        lines.append(f"| {r.fault} | {r.where} | {count} | {p50} | {top} | {r.note} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": list(os.getloadavg()),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement; returns what goes into the JSON file."""
    if args.only_switch:
        switches = await measure_switches(args.switch_requests)
        return {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "switch": [asdict(r) for r in switches],
        }
    client = ClientConfig()
    rows = [await measure_sequential("none", args.requests)]
    for fault in FAST_FAULTS:
        rows.append(await measure_sequential(fault, args.requests))
    background: list[asyncio.Task[Row]] = []
    if not args.skip_stalls:
        deadlines = {
            "stall_before_first": f"first_chunk_timeout ({client.first_chunk_timeout:g} s)",
            "stall_mid_stream": f"idle_timeout ({client.idle_timeout:g} s)",
        }
        background = [
            asyncio.create_task(measure_concurrent(fault, args.stall_requests, deadlines[fault]))
            for fault in STALL_FAULTS
        ]
    failing = await asyncio.gather(
        *(measure_all_failing(fault, args.failing_requests) for fault in FAST_FAULTS)
    )
    rows.extend(await asyncio.gather(*background))
    switches = await measure_switches(args.switch_requests)
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "router": "[faulty, healthy], strategy priority, every setting at its default",
        "defaults": defaults(),
        "health_reset_between_sequential_requests": True,
        "failover": [asdict(r) for r in rows],
        "all_models_failing": [asdict(r) for r in failing],
        "switch": [asdict(r) for r in switches],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20, help="per fast fault kind")
    parser.add_argument("--stall-requests", type=int, default=5, help="per stall kind")
    parser.add_argument("--failing-requests", type=int, default=3, help="all-failing, per kind")
    parser.add_argument("--skip-stalls", action="store_true", help="skip the 30 s stall kinds")
    parser.add_argument("--switch-requests", type=int, default=50, help="per mode and fault")
    parser.add_argument(
        "--only-switch", action="store_true", help="measure only the mid-stream switch"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    parser.add_argument("--verbose", action="store_true", help="show Sluice's own logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the JSON; 0 on success."""
    args = parse_args(argv)
    if not args.verbose:
        # health transitions and all_models_unavailable are logged loudly by design
        logging.getLogger("sluice").setLevel(logging.CRITICAL)
    results = asyncio.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    switches = [SwitchRow(**r) for r in results["switch"]]
    if args.only_switch:
        print("### Time lost at a mid-stream switch (last faulty chunk -> new text)\n")
        print(switch_markdown(switches))
        print(f"\nwrote {args.output}")
        return 0
    failover = [Row(**r) for r in results["failover"]]
    failing = [Row(**r) for r in results["all_models_failing"]]
    print("### Time to fail over (send -> first chunk of the healthy model)\n")
    print(markdown(failover))
    print("\n### Both models failing (send -> all_models_unavailable)\n")
    print(markdown(failing, unit="s"))
    print("\n### Time lost at a mid-stream switch (last faulty chunk -> new text)\n")
    print(switch_markdown(switches))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
