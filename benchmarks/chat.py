"""The chatStream suite: per-chunk latency through Sluice, beside direct and the peer.

Parties, each its own process: the stamped upstream (`benchmarks.upstream`) and the
load client (`benchmarks.loadgen`) share the load cores; Sluice (`server.py serve`
with a generated config) and the peer gateway (Portkey) run on the gateway core, one
at a time under load. For every workload (paced, burst) x concurrency x target
(direct, sluice, peer) the client runs one closed-loop window and reports what it
saw; this module adds the gateway's peak RSS, then measures memory per idle socket
on a fresh Sluice and, with `--profile`, profiles Sluice under the paced load.

    run(ctx) -> {"settings", "layout", "peer", "cells", "idle_sockets", "profile", ...}
"""

from __future__ import annotations

import contextlib
import io
import json
import pstats
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import redis_stats
from benchmarks.common import (
    ROOT,
    Child,
    Processes,
    Progress,
    core_layout,
    cpu_seconds,
    free_port,
    memory_kb,
    reset_peak_rss,
    wait_for_port,
    wait_idle,
)
from benchmarks.peer import portkey

TARGETS = ("direct", "sluice", "peer")
FULL_LEVELS = (1, 10, 50, 200, 400, 1000)
QUICK_LEVELS = (1, 10)
SHORT = "short"
SHORT_LEVELS = (1, 64)
"""Requests in flight on the one socket of the short-answer workload (direct: streams)."""


@dataclass(frozen=True)
class Workload:
    """A stream shape and how a window over it starts (seconds)."""

    name: str
    chunks: int
    delay_ms: float
    warmup: float
    ramp: float
    levels: tuple[int, ...] = ()
    """Concurrency levels of this workload; empty: the run's `--concurrency` levels."""
    one_socket: bool = False
    """Sluice: every worker's requests share one websocket (requests per socket)."""

    def upstream_arg(self) -> str:
        """The upstream's `--workload` value."""
        return f"{self.name}:{self.chunks}:{self.delay_ms:g}"


@dataclass
class ChatSettings:
    """Everything that shapes a chat run; stored verbatim in the JSON."""

    levels: list[int]
    duration: float
    workloads: list[Workload]
    peer: bool
    install_peer: bool
    idle_sockets: int
    profile: bool
    profile_level: int
    per_socket: int = 1
    quick: bool = False
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    resume_redis: str | None = None
    """Run Sluice with its request log on this Redis (`resume.redis`; docs/resume.md)."""

    @classmethod
    def build(
        cls,
        *,
        quick: bool,
        levels: list[int] | None,
        duration: float | None,
        peer: bool | None,
        idle_sockets: int | None,
        profile: bool,
        per_socket: int = 1,
        resume_redis: str | None = None,
    ) -> ChatSettings:
        """Defaults for a full or a `--quick` run, overridden by what the user passed."""
        warm = 0.5 if quick else 1.0
        workloads = [
            Workload("paced", 50, 20, warmup=warm, ramp=warm),
            Workload("burst", 50, 0, warmup=0.3 if quick else 0.5, ramp=0.1),
            # one-chunk answers, every request on one socket: per-request cost
            Workload(
                SHORT,
                1,
                0,
                warmup=0.3 if quick else 0.5,
                ramp=0.05,
                levels=SHORT_LEVELS,
                one_socket=True,
            ),
        ]
        chosen = sorted(set(levels or (QUICK_LEVELS if quick else FULL_LEVELS)))
        # --quick uses the peer only when it is installed already; a full run installs it.
        want_peer = (not quick) if peer is None else peer
        return cls(
            levels=chosen,
            duration=duration if duration is not None else (1.5 if quick else 8.0),
            workloads=workloads,
            peer=want_peer,
            install_peer=want_peer and not quick,
            idle_sockets=idle_sockets if idle_sockets is not None else (200 if quick else 10_000),
            profile=profile,
            profile_level=min(200, max(chosen)),
            per_socket=per_socket,
            quick=quick,
            resume_redis=resume_redis,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain data for the report."""
        return asdict(self)


@dataclass
class Context:
    """What a suite gets from the command line: where to write, processes, progress."""

    out_dir: Path
    stamp: str
    log_dir: Path
    processes: Processes
    progress: Progress
    python: str = sys.executable


def plan(settings: ChatSettings, peer_ready: bool) -> int:
    """How many progress steps a run has."""
    targets = 3 if peer_ready else 2
    steps = sum(len(w.levels or settings.levels) for w in settings.workloads) * targets
    return steps + 1 + (1 if settings.profile else 0)


def bench_config(upstream: int, workloads: list[Workload], sockets: int, by: str) -> str:
    """The generated Sluice YAML of a benchmark (`by` names its module): one language
    router per workload, all on the upstream, sized for `sockets` connections."""
    routers = "".join(
        f"""    - id: {w.name}
      retry: {{max_retries: 0}}
      models:
        - id: upstream
          error_budget: 1000000/s
          client: {{timeout: 600s, first_chunk_timeout: 120s, idle_timeout: 120s}}
          openai:
            base_url: http://127.0.0.1:{upstream}/{w.name}/v1
            model: bench
            api_key: sk-bench
"""
        for w in workloads
    )
    return (
        f"# generated by {by} for one run\n"
        "server:\n  host: 127.0.0.1\n  log_level: warning\n  heartbeat: 30s\n  drain_grace: 2s\n"
        # every stream connects from one address at once, as through a proxy
        f"  max_pending_connections: {sockets}\n  max_pending_per_peer: {sockets}\n"
        f"limits:\n  max_sockets: {sockets}\n  max_requests_per_socket: 1024\n"
        "routers:\n  language:\n" + routers
    )


def sluice_config(upstream: int, settings: ChatSettings) -> str:
    """The chat suite's Sluice YAML (see `bench_config`)."""
    sockets = max(settings.idle_sockets, max(settings.levels)) + 1000
    config = bench_config(upstream, settings.workloads, sockets, "benchmarks/chat.py")
    if settings.resume_redis is not None:
        config += f"resume:\n  redis: {settings.resume_redis}\n"
    return config


def _start_upstream(ctx: Context, settings: ChatSettings, cores: str) -> tuple[Child, int]:
    port = free_port()
    argv = [ctx.python, "-m", "benchmarks.upstream", "--port", str(port)]
    for w in settings.workloads:
        argv += ["--workload", w.upstream_arg()]
    child = ctx.processes.start("upstream", argv, cores=cores)
    wait_for_port(port, child)
    return child, port


def _start_sluice(
    ctx: Context,
    config: Path,
    cores: str,
    name: str = "sluice",
    profile_to: Path | None = None,
    gc_to: Path | None = None,
    workers: int | None = None,
) -> tuple[Child, int]:
    port = free_port()
    serve = ["serve", "--config", str(config), "--port", str(port)]
    if workers is not None:
        serve += ["--workers", str(workers)]
    if profile_to is None:
        argv = [ctx.python, str(ROOT / "server.py"), *serve]
    else:
        argv = [ctx.python, "-m", "benchmarks.sluice_profiled", "--cprofile", str(profile_to)]
        argv += ["--gc-stats", str(gc_to), "--", *serve] if gc_to else ["--", *serve]
    child = ctx.processes.start(name, argv, cores=cores)
    wait_for_port(port, child)
    return child, port


def _smoke_sse(url: str, headers: dict[str, str]) -> None:
    """One streamed request; raise unless it ends with `[DONE]` after stamped chunks."""
    body = json.dumps(
        {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **headers}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=20) as resp:
        text = resp.read().decode()
    if "[DONE]" not in text or '"content":"1' not in text.replace(": ", ":"):
        raise RuntimeError(f"unexpected stream: {text[:300]!r}")


def _start_peer(ctx: Context, settings: ChatSettings, cores: str, upstream: int) -> dict[str, Any]:
    """Install (full runs) and start Portkey; {"available", "reason"?, "child"?, "port"?}."""
    info: dict[str, Any] = {"name": "portkey", "package": f"{portkey.PACKAGE}@{portkey.VERSION}"}
    if not settings.peer:
        return {**info, "available": False, "reason": "disabled (--no-peer)"}
    child: Child | None = None
    try:
        if settings.install_peer:
            portkey.ensure_installed()
        elif not portkey.installed():
            return {
                **info,
                "available": False,
                "reason": "not installed (quick runs never install)",
            }
        port = free_port()
        child = ctx.processes.start(
            "portkey",
            portkey.command(port),
            cores=cores,
            cwd=portkey.INSTALL_DIR,
            env={"NODE_ENV": "production"},
        )
        wait_for_port(port, child)
        workload = settings.workloads[0].name
        _smoke_sse(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            portkey.request_headers(f"http://127.0.0.1:{upstream}/{workload}/v1"),
        )
    except (portkey.PeerUnavailable, RuntimeError, OSError) as error:
        if child is not None:
            ctx.processes.stop(child)
        return {**info, "available": False, "reason": str(error)[:500]}
    return {
        **info,
        "available": True,
        "child": child,
        "port": port,
        "patch": "Response re-created with mutable headers before x-portkey-* are added",
    }


def _run_client(
    ctx: Context, spec: dict[str, Any], cores: str, name: str, timeout: float
) -> dict[str, Any]:
    child = ctx.processes.start(
        name,
        [ctx.python, "-m", "benchmarks.loadgen", json.dumps(spec)],
        cores=cores,
        capture_stdout=True,
    )
    try:
        out, _ = child.popen.communicate(timeout=timeout)
    except BaseException:
        ctx.processes.stop(child)
        raise
    ctx.processes.stop(child)
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    if child.popen.returncode != 0 or not lines:
        raise RuntimeError(f"load client failed ({child.popen.returncode}):\n{child.log_tail()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _other_load(result: dict[str, Any], gateway_cores: str, load_cores: str) -> dict[str, float]:
    """Cores' worth of CPU used during the window by processes this run did not start."""
    window = result["window_s"] or 1.0
    busy: dict[str, float] = result.get("core_busy_s", {})
    cpu = result["cpu_s"]

    def busy_on(cores: str) -> float:
        return sum(float(busy.get(core, 0.0)) for core in cores.split(","))

    ours_gateway = cpu.get("gateway") or 0.0
    ours_load = (cpu.get("client") or 0.0) + (cpu.get("upstream") or 0.0)
    if gateway_cores == load_cores:
        return {
            "all_cores": round(max(0.0, busy_on(load_cores) - ours_gateway - ours_load) / window, 3)
        }
    return {
        "gateway_core": round(max(0.0, busy_on(gateway_cores) - ours_gateway) / window, 3),
        "load_core": round(max(0.0, busy_on(load_cores) - ours_load) / window, 3),
    }


def _cell(
    ctx: Context,
    settings: ChatSettings,
    workload: Workload,
    level: int,
    target: str,
    endpoints: dict[str, Any],
    cores: tuple[str, str],
) -> dict[str, Any]:
    """One window: `level` concurrent streams of `workload` against `target`."""
    gateway_cores, load_cores = cores
    upstream = endpoints["upstream"]
    gateway: Child | None = endpoints.get(target)
    watch = {"upstream": upstream["child"].pid}
    if target == "direct":
        spec: dict[str, Any] = {
            "target": "sse",
            "url": f"http://127.0.0.1:{upstream['port']}/{workload.name}/v1/chat/completions",
        }
    elif target == "sluice":
        spec = {
            "target": "chatstream",
            "url": f"ws://127.0.0.1:{endpoints['sluice_port']}/v1/language/{workload.name}"
            "/chatStream",
            "per_socket": level if workload.one_socket else settings.per_socket,
        }
    else:
        spec = {
            "target": "sse",
            "url": f"http://127.0.0.1:{endpoints['peer_port']}/v1/chat/completions",
            "headers": portkey.request_headers(
                f"http://127.0.0.1:{upstream['port']}/{workload.name}/v1"
            ),
        }
    if gateway is not None:
        watch["gateway"] = gateway.pid
        wait_idle(gateway.pid)
        peak_reset = reset_peak_rss(gateway.pid)
    spec.update(
        concurrency=level,
        duration=settings.duration,
        warmup=workload.warmup,
        ramp=workload.ramp,
        watch=watch,
    )
    timeout = workload.warmup + settings.duration + 120
    redis_url = settings.resume_redis if target == "sluice" else None
    redis_before = redis_stats.snapshot(redis_url) if redis_url else None
    result = _run_client(ctx, spec, load_cores, f"client-{target}", timeout)
    result.update(workload=workload.name, target=target, concurrency=level)
    if redis_url and redis_before is not None:
        if gateway is not None:
            wait_idle(gateway.pid)  # the log's last flush of the cell
        after = redis_stats.snapshot(redis_url)
        result["redis"] = redis_stats.cost(redis_url, redis_before, after, result)
    window = result["window_s"] or 1.0
    cpu = result["cpu_s"]
    load_cpu = (cpu.get("client") or 0.0) + (cpu.get("upstream") or 0.0)
    result["load_core_util"] = round(load_cpu / window, 3)
    result["other_load"] = _other_load(result, gateway_cores, load_cores)
    if gateway is not None:
        gateway_cpu = cpu.get("gateway")
        chunks = result["chunks"]
        result["gateway_core_util"] = round(gateway_cpu / window, 3) if gateway_cpu else 0.0
        result["gateway_cpu_ms_per_1k_chunks"] = (
            round(gateway_cpu * 1e3 / chunks * 1000, 2) if chunks and gateway_cpu else None
        )
        requests = result["requests"]
        result["gateway_cpu_ms_per_request"] = (
            round(gateway_cpu * 1e3 / requests, 4) if requests and gateway_cpu else None
        )
        mem = memory_kb(gateway.pid)
        result["gateway_peak_rss_mb"] = round(mem.get("VmHWM", 0) / 1024, 1)
        result["gateway_rss_mb"] = round(mem.get("VmRSS", 0) / 1024, 1)
        result["peak_rss_since"] = "window" if peak_reset else "process start"
    return result


def _idle_sockets(
    ctx: Context, settings: ChatSettings, config: Path, gateway_cores: str, load_cores: str
) -> dict[str, Any]:
    """Memory per idle socket: RSS growth of a fresh Sluice holding N idle chatStreams."""
    count = settings.idle_sockets
    child, port = _start_sluice(ctx, config, gateway_cores, name="sluice-idle")
    url = f"ws://127.0.0.1:{port}/v1/language/{settings.workloads[0].name}/chatStream"
    try:
        # warm the process (first-upgrade imports, allocator arenas) before the baseline
        _run_idle_client(ctx, url, min(100, count), load_cores, lambda _: None)
        wait_idle(child.pid)
        before = memory_kb(child.pid)["VmRSS"]
        measured: dict[str, Any] = {}

        def hold(opened: int) -> None:
            time.sleep(1.0)
            wait_idle(child.pid, within=10.0)
            measured["rss_kb"] = memory_kb(child.pid)["VmRSS"]
            measured["cpu_s"] = cpu_seconds(child.pid)

        result = _run_idle_client(ctx, url, count, load_cores, hold)
    finally:
        ctx.processes.stop(child)
    after = measured.get("rss_kb", before)
    opened = result["opened"]
    return {
        "sockets_requested": count,
        "sockets_opened": opened,
        "failed": result["failed"],
        "connect_s": result["connect_s"],
        "rss_before_mb": round(before / 1024, 1),
        "rss_after_mb": round(after / 1024, 1),
        "kb_per_socket": round((after - before) / opened, 2) if opened else None,
        "error_samples": result["error_samples"],
    }


def _run_idle_client(
    ctx: Context, url: str, count: int, cores: str, while_open: Callable[[int], None]
) -> dict[str, Any]:
    import subprocess

    spec = {"target": "idle", "url": url, "count": count, "hold": 120}
    child = ctx.processes.start(
        "client-idle",
        [ctx.python, "-m", "benchmarks.loadgen", json.dumps(spec)],
        cores=cores,
        stdin=subprocess.PIPE,
        capture_stdout=True,
    )
    try:
        assert child.popen.stdout is not None and child.popen.stdin is not None
        ready = child.popen.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError(f"idle client failed:\n{child.log_tail()}")
        while_open(int(ready[1]))
        child.popen.stdin.write("close\n")
        child.popen.stdin.flush()
        out = child.popen.stdout.read()
        child.popen.wait(60)
    finally:
        ctx.processes.stop(child)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _profile(
    ctx: Context,
    settings: ChatSettings,
    config: Path,
    endpoints: dict[str, Any],
    cores: tuple[str, str],
) -> dict[str, Any]:
    """Sluice under cProfile during the paced load; top-30 cumulative (and own-time) lines."""
    raw = ctx.out_dir / f"chat-{ctx.stamp}-profile.prof"
    gc_path = ctx.log_dir / "sluice-profile-gc.json"
    child, port = _start_sluice(
        ctx, config, cores[0], name="sluice-profile", profile_to=raw, gc_to=gc_path
    )
    workload = settings.workloads[0]
    try:
        cell = _cell(
            ctx,
            settings,
            workload,
            settings.profile_level,
            "sluice",
            {**endpoints, "sluice": child, "sluice_port": port},
            cores,
        )
    finally:
        ctx.processes.stop(child)  # SIGTERM: run_app returns, the wrapper writes both files
    if not raw.exists():
        return {"error": "cProfile wrote no output"}
    gc_stats = json.loads(gc_path.read_text()) if gc_path.exists() else None
    text_path = ctx.out_dir / f"chat-{ctx.stamp}-profile.txt"
    stats = pstats.Stats(str(raw))
    lines: list[str] = []
    for order in ("cumulative", "tottime"):
        buffer = io.StringIO()
        pstats.Stats(str(raw), stream=buffer).strip_dirs().sort_stats(order).print_stats(30)
        lines.append(f"## top 30 by {order}\n{buffer.getvalue()}")
    gc_line = ""
    if gc_stats is not None:
        gc_line = (
            f"Garbage collection (gc.callbacks) over the process's life: {gc_stats['gc_s']} s "
            f"of {gc_stats['wall_s']} s wall; by generation: "
            + "; ".join(
                f"gen{g['generation']} {g['collections']} runs, {g['pause_s']} s, "
                f"longest {g['longest_ms']} ms"
                for g in gc_stats["generations"]
            )
            + ". cProfile charges these pauses to whatever function was allocating.\n\n"
        )
    text_path.write_text(
        f"Sluice under cProfile, {workload.name} workload, {settings.profile_level} streams, "
        f"{settings.duration} s window\n\n{gc_line}" + "\n".join(lines)
    )
    total = stats.total_tt  # type: ignore[attr-defined]
    own = sorted(
        (
            item
            for item in stats.stats.items()  # type: ignore[attr-defined]
            if "poll" not in item[0][2]  # waiting in epoll is idle time, not a cost
        ),
        key=lambda item: item[1][2],
        reverse=True,
    )[:10]
    return {
        "workload": workload.name,
        "concurrency": settings.profile_level,
        "file": text_path.name,
        "raw": raw.name,
        "total_s": round(total, 3),
        "chunks_under_profile": cell["chunks"],
        "gc": gc_stats,
        "top_own_time": [
            {
                "function": f"{Path(func[0]).name}:{func[1]}({func[2]})",
                "own_s": round(row[2], 3),
                "share": round(row[2] / total, 3) if total else None,
                "calls": row[1],
            }
            for func, row in own
        ],
    }


def run(ctx: Context, settings: ChatSettings) -> dict[str, Any]:
    """Run the whole chat suite; every figure in one dict (see the module docstring)."""
    gateway_cores, load_cores = cores = core_layout()
    with contextlib.suppress(OSError):
        import os

        os.sched_setaffinity(0, {int(c) for c in load_cores.split(",")})
    upstream, upstream_port = _start_upstream(ctx, settings, load_cores)
    config = ctx.log_dir / "sluice.yaml"
    config.write_text(sluice_config(upstream_port, settings))
    sluice, sluice_port = _start_sluice(ctx, config, gateway_cores)
    peer = _start_peer(ctx, settings, gateway_cores, upstream_port)
    endpoints: dict[str, Any] = {
        "upstream": {"child": upstream, "port": upstream_port},
        "sluice": sluice,
        "sluice_port": sluice_port,
    }
    targets = ["direct", "sluice"]
    if peer["available"]:
        endpoints["peer"] = peer["child"]
        endpoints["peer_port"] = peer["port"]
        targets.append("peer")
    settings.targets = targets
    ctx.progress.total = plan(settings, peer["available"])
    cells: list[dict[str, Any]] = []
    started = time.monotonic()
    for workload in settings.workloads:
        for level in workload.levels or settings.levels:
            for target in targets:
                ctx.progress.show(f"{workload.name} x{level} {target}")
                cells.append(_cell(ctx, settings, workload, level, target, endpoints, cores))
                ctx.progress.step()
    ctx.processes.stop(sluice)
    if "child" in peer:
        ctx.processes.stop(peer.pop("child"))
    ctx.progress.show(f"idle sockets x{settings.idle_sockets}")
    idle = _idle_sockets(ctx, settings, config, gateway_cores, load_cores)
    ctx.progress.step()
    profile: dict[str, Any] | None = None
    if settings.profile:
        ctx.progress.show(f"profile {settings.workloads[0].name} x{settings.profile_level}")
        profile = _profile(ctx, settings, config, endpoints, cores)
        ctx.progress.step()
    return {
        "suite": "chat",
        "settings": settings.to_json(),
        "layout": {
            "gateway_cores": gateway_cores,
            "load_cores": load_cores,
            "note": (
                "one machine: the gateway under test is pinned to its core(s), the load "
                "client and the upstream share the other core(s); all traffic is loopback"
            ),
        },
        "peer": {k: v for k, v in peer.items() if k not in ("child",)},
        "cells": cells,
        "idle_sockets": idle,
        "profile": profile,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
