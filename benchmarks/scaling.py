"""The scaling suite: the chat workloads against `--workers 1` on one core and
`--workers 2` on both cores.

Parties, each its own process: the stamped upstream (`benchmarks.upstream`), the
load client (`benchmarks.loadgen`, chatStream, one socket per stream) and Sluice
(`server.py serve --workers N` with a generated config). Two layouts:

- `1 worker`: Sluice pinned to the first core, upstream and client on the others
  (the chat suite's layout);
- `N workers`: Sluice's supervisor and N workers on every core, and the upstream
  and client on those same cores: the load generator then competes with the
  gateway for CPU, so the figures understate what N cores give a gateway alone.

For every layout x workload (paced, burst) x concurrency the client runs one
closed-loop window. The gateway's CPU is the supervisor's plus every worker's
(worker pids are read from `/metrics`).

    run(ctx, settings) -> {"settings", "layouts", "cells", "elapsed_s"}
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.chat import Context, Workload, bench_config
from benchmarks.common import (
    ROOT,
    Child,
    free_port,
    machine_line,
    memory_kb,
    wait_for_port,
    wait_idle,
)

FULL_PACED = (200, 400, 800)
FULL_BURST = (50, 200)
QUICK_LEVELS = (10,)


@dataclass
class ScalingSettings:
    """Everything that shapes a scaling run; stored verbatim in the JSON."""

    workloads: list[Workload]
    levels: dict[str, list[int]]
    duration: float
    workers: int
    quick: bool = False

    @classmethod
    def build(
        cls, *, quick: bool, levels: list[int] | None, duration: float | None
    ) -> ScalingSettings:
        """Defaults for a full or a `--quick` run; `levels` replaces both workloads' levels."""
        warm = 0.5 if quick else 1.0
        workloads = [
            Workload("paced", 50, 20, warmup=warm, ramp=warm),
            Workload("burst", 50, 0, warmup=0.3 if quick else 0.5, ramp=0.1),
        ]
        if levels:
            chosen = {w.name: sorted(set(levels)) for w in workloads}
        elif quick:
            chosen = {w.name: list(QUICK_LEVELS) for w in workloads}
        else:
            chosen = {"paced": list(FULL_PACED), "burst": list(FULL_BURST)}
        return cls(
            workloads=workloads,
            levels=chosen,
            duration=duration if duration is not None else (1.5 if quick else 8.0),
            workers=max(2, len(os.sched_getaffinity(0))),
            quick=quick,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain data for the report."""
        return asdict(self)


@dataclass
class Layout:
    """Where the gateway and the load run, and how many workers serve."""

    name: str
    workers: int
    gateway_cores: str
    load_cores: str
    shared: bool
    pids: dict[str, int] = field(default_factory=dict)


def layouts(workers: int) -> list[Layout]:
    """`1 worker` on the first core (load on the rest), `N workers` on every core (load too)."""
    cores = sorted(os.sched_getaffinity(0))
    everything = ",".join(str(c) for c in cores)
    rest = ",".join(str(c) for c in cores[1:]) or str(cores[0])
    return [
        Layout("1 worker", 1, str(cores[0]), rest, shared=len(cores) == 1),
        Layout(f"{workers} workers", workers, everything, everything, shared=True),
    ]


def sluice_config(upstream: int, settings: ScalingSettings) -> str:
    """The scaling suite's Sluice YAML (see `benchmarks.chat.bench_config`)."""
    sockets = max(max(levels) for levels in settings.levels.values()) + 1000
    return bench_config(upstream, settings.workloads, sockets, "benchmarks/scaling.py")


def worker_pids(port: int, want: int, within: float = 30.0) -> list[int]:
    """The pids of the `want` workers serving `port`, from `/metrics`, once all listen."""
    deadline = time.monotonic() + within
    pids: set[int] = set()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            text = ""
        pids = {
            int(line.split('pid="', 1)[1].split('"', 1)[0])
            for line in text.splitlines()
            if line.startswith("sluice_worker_active_sockets{")
        }
        if len(pids) >= want:
            return sorted(pids)
        time.sleep(0.1)
    raise RuntimeError(f"only {len(pids)} of {want} workers came up on port {port}")


def _start_sluice(ctx: Context, config: Path, layout: Layout) -> tuple[Child, int]:
    port = free_port()
    argv = [ctx.python, str(ROOT / "server.py"), "serve"]
    argv += ["--config", str(config), "--port", str(port), "--workers", str(layout.workers)]
    child = ctx.processes.start(f"sluice-{layout.workers}w", argv, cores=layout.gateway_cores)
    wait_for_port(port, child)
    layout.pids = {"gateway": child.pid}
    if layout.workers > 1:
        for i, pid in enumerate(worker_pids(port, layout.workers)):
            layout.pids[f"worker{i}"] = pid
    return child, port


def _start_upstream(ctx: Context, settings: ScalingSettings, cores: str) -> tuple[Child, int]:
    port = free_port()
    argv = [ctx.python, "-m", "benchmarks.upstream", "--port", str(port)]
    for w in settings.workloads:
        argv += ["--workload", w.upstream_arg()]
    child = ctx.processes.start(f"upstream-{cores}", argv, cores=cores)
    wait_for_port(port, child)
    return child, port


def _run_client(ctx: Context, spec: dict[str, Any], cores: str, timeout: float) -> dict[str, Any]:
    child = ctx.processes.start(
        "client-scaling",
        [ctx.python, "-m", "benchmarks.loadgen", json.dumps(spec)],
        cores=cores,
        capture_stdout=True,
    )
    try:
        out, _ = child.popen.communicate(timeout=timeout)
    finally:
        ctx.processes.stop(child)
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    if child.popen.returncode != 0 or not lines:
        raise RuntimeError(f"load client failed ({child.popen.returncode}):\n{child.log_tail()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _cell(
    ctx: Context,
    settings: ScalingSettings,
    layout: Layout,
    workload: Workload,
    level: int,
    port: int,
    upstream: int,
) -> dict[str, Any]:
    """One window of `level` streams of `workload` against the layout's Sluice."""
    for pid in layout.pids.values():
        wait_idle(pid)
    spec = {
        "target": "chatstream",
        "url": f"ws://127.0.0.1:{port}/v1/language/{workload.name}/chatStream",
        "concurrency": level,
        "duration": settings.duration,
        "warmup": workload.warmup,
        "ramp": workload.ramp,
        "watch": {**layout.pids, "upstream": upstream},
    }
    result = _run_client(ctx, spec, layout.load_cores, workload.warmup + settings.duration + 120)
    window = result["window_s"] or 1.0
    cpu = result["cpu_s"]
    gateway_cpu = sum(cpu.get(name) or 0.0 for name in layout.pids)
    chunks = result["chunks"]
    busy = result.get("core_busy_s", {})
    result.update(
        layout=layout.name,
        workers=layout.workers,
        workload=workload.name,
        concurrency=level,
        gateway_cpu_s=round(gateway_cpu, 4),
        gateway_cores_used=round(gateway_cpu / window, 3),
        gateway_cpu_ms_per_1k_chunks=(
            round(gateway_cpu * 1e6 / chunks, 2) if chunks and gateway_cpu else None
        ),
        load_cores_used=round(
            ((cpu.get("client") or 0.0) + (cpu.get("upstream") or 0.0)) / window, 3
        ),
        machine_busy_cores=round(sum(float(v) for v in busy.values()) / window, 3),
        gateway_rss_mb=round(
            sum(memory_kb(pid).get("VmRSS", 0) for pid in layout.pids.values()) / 1024, 1
        ),
    )
    return result


def run(ctx: Context, settings: ScalingSettings) -> dict[str, Any]:
    """Run every layout x workload x level; every figure in one dict."""
    started = time.monotonic()
    config = ctx.log_dir / "sluice-scaling.yaml"
    plan = layouts(settings.workers)
    ctx.progress.total = len(plan) * sum(len(v) for v in settings.levels.values())
    cells: list[dict[str, Any]] = []
    for layout in plan:
        upstream, upstream_port = _start_upstream(ctx, settings, layout.load_cores)
        config.write_text(sluice_config(upstream_port, settings))
        sluice, port = _start_sluice(ctx, config, layout)
        try:
            for workload in settings.workloads:
                for level in settings.levels[workload.name]:
                    ctx.progress.show(f"{layout.name} {workload.name} x{level}")
                    cells.append(_cell(ctx, settings, layout, workload, level, port, upstream.pid))
                    ctx.progress.step()
        finally:
            ctx.processes.stop(sluice)
            ctx.processes.stop(upstream)
    return {
        "suite": "scaling",
        "settings": settings.to_json(),
        "layouts": [{k: v for k, v in asdict(layout).items() if k != "pids"} for layout in plan],
        "cells": cells,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def _f(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any], command: str) -> str:
    """The scaling table: each workload and level, 1 worker beside N workers."""
    m = result.get("machine", {})
    lines = [
        "### scaling: `--workers 1` on one core vs `--workers N` on every core",
        "",
        f"Command: `{command}`  ",
        machine_line(m),
    ]
    for layout in result["layouts"]:
        where = (
            f"Sluice on cores {layout['gateway_cores']}, upstream + load client on "
            f"cores {layout['load_cores']}"
        )
        if layout["shared"]:
            where += " (**shared with the gateway**: the load generator competes for the same CPU)"
        lines.append(f"{layout['name']}: {where}.  ")
    lines += [
        "chatStream, one socket per stream, 50-chunk answers (paced: one chunk per 20 ms; "
        "burst: back to back). Latency = chunk arrival - the upstream's stamp. Gateway CPU = "
        "the supervisor's plus every worker's /proc time over the window.",
        "",
        "| workload | streams | layout | chunks/s | gateway cores used | CPU ms / 1k chunks "
        "| p50 ms | p99 ms | TTFC p50 ms | load cores used | machine busy cores | RSS MB "
        "| errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result["cells"]:
        later = c.get("latency_later_ms") or {}
        ttfc = c.get("ttfc_ms") or {}
        lines.append(
            f"| {c['workload']} | {c['concurrency']} | {c['layout']} | {_f(c['chunks_per_s'], 0)} "
            f"| {_f(c['gateway_cores_used'])} | {_f(c['gateway_cpu_ms_per_1k_chunks'], 1)} "
            f"| {_f(later.get('p50'))} | {_f(later.get('p99'))} | {_f(ttfc.get('p50'))} "
            f"| {_f(c['load_cores_used'])} | {_f(c['machine_busy_cores'])} "
            f"| {_f(c['gateway_rss_mb'], 1)} | {c['errors']} |"
        )
    lines.append("")
    return "\n".join(lines)
