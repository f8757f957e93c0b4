"""Figures derived from a chat run, and its Markdown: added latency, degradation, targets.

`analyse(result)` -> {"comparisons", "degradation", "targets"} (stored in the JSON);
`markdown(result)` -> the tables a person reads.

Added latency is a gateway's figure minus the direct target's at the same workload
and concurrency in the same run; the ratio is gateway / direct. A gateway's p99
"degrades" at the first concurrency where its later-chunk p99 is over twice its own
p99 at the lowest concurrency, or more than `DEGRADED_ADDED_MS` above direct's, or
more than 1 % of its requests failed; it "sustains" the level before that.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import fmt

DEGRADED_ADDED_MS = 20.0
DEGRADED_FLOOR_MS = 5.0
GATEWAYS = ("sluice", "peer")
LOAD_BOUND = 0.9


def _index(cells: list[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    return {(c["workload"], c["concurrency"], c["target"]): c for c in cells}


def _stat(cell: dict[str, Any] | None, dist: str, key: str) -> float | None:
    if cell is None:
        return None
    value = cell.get(dist, {}).get(key)
    return float(value) if value is not None else None


def _minus(a: float | None, b: float | None) -> float | None:
    return round(a - b, 4) if a is not None and b is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _failed_share(cell: dict[str, Any]) -> float:
    total = cell.get("requests_total", 0) + cell.get("errors", 0)
    return cell.get("errors", 0) / total if total else 0.0


SHORT = "short"
"""The one-chunk-answer workload: reported per request, not per chunk."""
TEN_THOUSAND = 10_000


def analyse(result: dict[str, Any]) -> dict[str, Any]:
    """The run's cells -> comparisons vs direct, degradation levels and the issue's targets."""
    cells = [c for c in result["cells"] if c["workload"] != SHORT]
    index = _index(cells)
    workloads = list(dict.fromkeys(c["workload"] for c in cells))
    levels = sorted({c["concurrency"] for c in cells})
    comparisons: list[dict[str, Any]] = []
    degradation: dict[str, dict[str, Any]] = {}
    for workload in workloads:
        for gateway in GATEWAYS:
            if not any(k[0] == workload and k[2] == gateway for k in index):
                continue
            base_level = next(lvl for lvl in levels if (workload, lvl, gateway) in index)
            baseline = _stat(index[(workload, base_level, gateway)], "latency_later_ms", "p99")
            degraded_at: int | None = None
            reason = ""
            for level in levels:
                cell = index.get((workload, level, gateway))
                direct = index.get((workload, level, "direct"))
                if cell is None:
                    continue
                row = _compare(workload, level, gateway, cell, direct)
                comparisons.append(row)
                p99 = _stat(cell, "latency_later_ms", "p99")
                added = row["added_p99_ms"]
                why = ""
                if p99 is None:
                    why = "no chunks"
                elif baseline and p99 > max(2 * baseline, baseline + DEGRADED_FLOOR_MS):
                    why = f"p99 {p99:.1f} ms > 2 x {baseline:.1f} ms"
                elif added is not None and added > DEGRADED_ADDED_MS:
                    why = f"added p99 {added:.1f} ms > {DEGRADED_ADDED_MS:g} ms"
                elif _failed_share(cell) > 0.01:
                    why = f"{_failed_share(cell):.0%} of requests failed"
                if why and degraded_at is None:
                    degraded_at, reason = level, why
            tested = [lvl for lvl in levels if (workload, lvl, gateway) in index]
            sustained = max(
                (lvl for lvl in tested if degraded_at is None or lvl < degraded_at), default=None
            )
            degradation[f"{workload}/{gateway}"] = {
                "workload": workload,
                "gateway": gateway,
                "baseline_p99_ms": baseline,
                "degrades_at": degraded_at,
                "reason": reason,
                "sustains": sustained,
                "highest_tested": max(tested) if tested else None,
            }
    short = _short_answers(result["cells"])
    return {
        "comparisons": comparisons,
        "degradation": degradation,
        "short_answers": short,
        "targets": _targets(result, index, comparisons, degradation) + _short_targets(short),
    }


def _short_answers(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per short-answer cell: requests/s, CPU per request, 10,000 requests' time."""
    index = _index(cells)
    rows = []
    for cell in cells:
        if cell["workload"] != SHORT:
            continue
        direct = index.get((SHORT, cell["concurrency"], "direct"))
        rate = cell.get("requests_per_s")
        ttfc, dttfc = _stat(cell, "ttfc_ms", "p50"), _stat(direct, "ttfc_ms", "p50")
        rows.append(
            {
                "concurrency": cell["concurrency"],
                "target": cell["target"],
                "requests_per_s": rate,
                "ratio_to_direct": _ratio(rate, direct.get("requests_per_s") if direct else None),
                "ttfc_p50_ms": ttfc,
                "added_ttfc_p50_ms": _minus(ttfc, dttfc) if cell["target"] != "direct" else None,
                "gateway_cpu_ms_per_request": cell.get("gateway_cpu_ms_per_request"),
                "gateway_core_util": cell.get("gateway_core_util"),
                "load_core_util": cell.get("load_core_util"),
                "seconds_for_10k": round(TEN_THOUSAND / rate, 2) if rate else None,
                "errors": cell.get("errors", 0),
            }
        )
    return rows


def _short_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sluice = [r for r in rows if r["target"] == "sluice"]
    if not sluice:
        return []
    busiest = max(sluice, key=lambda r: r["concurrency"])
    level = busiest["concurrency"]
    return [
        _goal(
            f"gateway CPU per one-chunk request ({level} in flight on one socket)",
            "<= 0.3 ms",
            busiest["gateway_cpu_ms_per_request"],
            0.3,
            "ms",
        ),
        _goal(
            f"10,000 requests on one socket ({level} in flight)",
            "< 3 s",
            busiest["seconds_for_10k"],
            3.0,
            "s",
        ),
    ]


def _compare(
    workload: str, level: int, gateway: str, cell: dict[str, Any], direct: dict[str, Any] | None
) -> dict[str, Any]:
    p50, p99 = (_stat(cell, "latency_later_ms", k) for k in ("p50", "p99"))
    d50, d99 = (_stat(direct, "latency_later_ms", k) for k in ("p50", "p99"))
    ttfc, dttfc = _stat(cell, "ttfc_ms", "p50"), _stat(direct, "ttfc_ms", "p50")
    first, dfirst = _stat(cell, "latency_first_ms", "p50"), _stat(direct, "latency_first_ms", "p50")
    return {
        "workload": workload,
        "concurrency": level,
        "gateway": gateway,
        "added_p50_ms": _minus(p50, d50),
        "added_p99_ms": _minus(p99, d99),
        "ratio_p50": _ratio(p50, d50),
        "ratio_p99": _ratio(p99, d99),
        "added_ttfc_p50_ms": _minus(ttfc, dttfc),
        "added_first_chunk_p50_ms": _minus(first, dfirst),
        "cpu_ms_per_1k_chunks": cell.get("gateway_cpu_ms_per_1k_chunks"),
        "direct_load_bound": bool(direct and direct.get("load_core_util", 0) > LOAD_BOUND),
    }


def _nearest(levels: list[int], wanted: int) -> int | None:
    return min(levels, key=lambda lvl: (abs(lvl - wanted), lvl)) if levels else None


def _goal(
    name: str, goal: str, value: float | None, limit: float, unit: str, lower_is_better: bool = True
) -> dict[str, Any]:
    if value is None:
        return {"target": name, "goal": goal, "measured": None, "met": None, "note": "not measured"}
    met = value < limit if lower_is_better else value >= limit
    note = "met"
    if not met:
        gap = value - limit if lower_is_better else limit - value
        note = f"missed by {gap:.3g} {unit}"
        if limit and lower_is_better:
            note += f" ({value / limit:.2g}x the goal)"
    return {"target": name, "goal": goal, "measured": value, "unit": unit, "met": met, "note": note}


def _targets(
    result: dict[str, Any],
    index: dict[tuple[str, int, str], dict[str, Any]],
    comparisons: list[dict[str, Any]],
    degradation: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    compare = {(c["workload"], c["concurrency"], c["gateway"]): c for c in comparisons}
    levels = sorted({c["concurrency"] for c in result["cells"] if c["workload"] == "paced"})
    low = levels[0] if levels else None
    ten = _nearest(levels, 10)
    two_hundred = _nearest(levels, 200)
    out = []
    first = compare.get(("paced", low or 0, "sluice"), {}).get("added_ttfc_p50_ms")
    out.append(_goal(f"first chunk added (p50, {low} paced)", "< 1 ms", first, 1.0, "ms"))
    row = compare.get(("paced", ten or 0, "sluice"), {})
    out.append(
        _goal(
            f"later chunks added p50 ({ten} paced)", "< 0.2 ms", row.get("added_p50_ms"), 0.2, "ms"
        )
    )
    out.append(
        _goal(f"later chunks added p99 ({ten} paced)", "< 1 ms", row.get("added_p99_ms"), 1.0, "ms")
    )
    ours = compare.get(("paced", two_hundred or 0, "sluice"), {}).get("cpu_ms_per_1k_chunks")
    theirs = compare.get(("paced", two_hundred or 0, "peer"), {}).get("cpu_ms_per_1k_chunks")
    if theirs is not None:
        out.append(
            _goal(
                f"CPU per 1k chunks below the peer's ({two_hundred} paced)",
                f"< {theirs} ms (peer)",
                ours,
                float(theirs),
                "ms/1k chunks",
            )
        )
    else:
        out.append(
            {
                "target": f"CPU per 1k chunks below the peer's ({two_hundred} paced)",
                "goal": "< peer",
                "measured": ours,
                "unit": "ms/1k chunks",
                "met": None,
                "note": "peer not measured",
            }
        )
    sustained = degradation.get("paced/sluice", {})
    value = sustained.get("sustains")
    goal = _goal(
        "paced streams per core before p99 degrades",
        ">= 400",
        float(value) if value is not None else None,
        400,
        "streams",
        lower_is_better=False,
    )
    if sustained.get("degrades_at") is None and value is not None:
        goal["note"] += f" (no degradation up to {value}, the highest tested)"
    out.append(goal)
    bursts = [
        c.get("chunks_per_s") or 0.0
        for c in result["cells"]
        if c["workload"] == "burst" and c["target"] == "sluice"
    ]
    out.append(
        _goal(
            "burst chunks/s",
            ">= 25,000",
            max(bursts) if bursts else None,
            25_000,
            "chunks/s",
            lower_is_better=False,
        )
    )
    rss = index.get(("paced", two_hundred or 0, "sluice"), {}).get("gateway_peak_rss_mb")
    out.append(_goal(f"peak RSS at {two_hundred} paced streams", "< 100 MB", rss, 100.0, "MB"))
    idle = (result.get("idle_sockets") or {}).get("kb_per_socket")
    out.append(_goal("memory per idle socket", "< 50 KB", idle, 50.0, "KB"))
    return out


def _gc_line(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "GC pauses: not measured."
    full = stats["generations"][2]
    return (
        f"Garbage collection paused the profiled Sluice for {stats['gc_s']} s of "
        f"{stats['wall_s']} s (full collections: {full['collections']}, {full['pause_s']} s, "
        f"longest {full['longest_ms']} ms); cProfile charges those pauses to whichever "
        "function was allocating, so own times below include them."
    )


def _other(cell: dict[str, Any]) -> str:
    other = cell.get("other_load") or {}
    if "all_cores" in other:
        return f"{other['all_cores']:.0%}"
    if not other:
        return "-"
    return f"{other.get('gateway_core', 0):.0%} / {other.get('load_core', 0):.0%}"


_f = fmt


def markdown(result: dict[str, Any], command: str) -> str:
    """The run as Markdown: settings line, one table per workload, degradation, targets."""
    analysis = result["analysis"]
    compare = {(c["workload"], c["concurrency"], c["gateway"]): c for c in analysis["comparisons"]}
    machine = result.get("machine", {})
    layout = result["layout"]
    settings = result["settings"]
    lines = [
        "## chatStream: per-chunk latency, Sluice vs direct vs peer",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine.get('cpu_model')}, {machine.get('cores')} cores, "
        f"Python {machine.get('python')}, commit {str(machine.get('git_commit'))[:10]}"
        f"{' (dirty)' if machine.get('git_dirty') else ''}.  ",
        f"Layout: gateway on core {layout['gateway_cores']}, load client + upstream on core "
        f"{layout['load_cores']} - all on this one machine, sharing its cores; loopback only.  ",
        f"Each cell: {settings['duration']} s closed-loop window; 50-chunk streams; paced = one "
        "chunk every 20 ms, burst = back to back. Latency = client receive time - the "
        "upstream's send stamp, over every chunk after the first; TTFC = request sent -> "
        "first chunk. Added = gateway - direct, same run.",
        "",
    ]
    peer = result.get("peer", {})
    if peer.get("available"):
        lines.append(f"Peer: {peer.get('package')} ({peer.get('patch')}).")
    else:
        lines.append(f"Peer: not measured - {peer.get('reason')}.")
    lines.append("")
    for workload in dict.fromkeys(c["workload"] for c in result["cells"]):
        if workload == SHORT:
            continue
        lines += [
            f"### {workload}",
            "",
            "| streams | target | p50 ms | p90 ms | p99 ms | max ms | added p50 | added p99 "
            "| x direct p50 | TTFC p50 | added TTFC | req/s | chunks/s | CPU ms/1k chunks "
            "| gw core | peak RSS MB | load core | other procs | errors |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            "---:|---:|---:|",
        ]
        for cell in result["cells"]:
            if cell["workload"] != workload:
                continue
            later = cell.get("latency_later_ms", {})
            row = compare.get((workload, cell["concurrency"], cell["target"]), {})
            util = cell.get("gateway_core_util")
            lines.append(
                "| "
                + " | ".join(
                    [
                        str(cell["concurrency"]),
                        cell["target"],
                        _f(later.get("p50")),
                        _f(later.get("p90")),
                        _f(later.get("p99")),
                        _f(later.get("max"), 1),
                        _f(row.get("added_p50_ms")),
                        _f(row.get("added_p99_ms")),
                        _f(row.get("ratio_p50")),
                        _f(cell.get("ttfc_ms", {}).get("p50")),
                        _f(row.get("added_ttfc_p50_ms")),
                        _f(cell.get("requests_per_s"), 1),
                        _f(cell.get("chunks_per_s"), 0),
                        _f(cell.get("gateway_cpu_ms_per_1k_chunks"), 1),
                        f"{util:.0%}" if util is not None else "-",
                        _f(cell.get("gateway_peak_rss_mb"), 1),
                        f"{cell.get('load_core_util', 0):.0%}",
                        _other(cell),
                        str(cell.get("errors", 0)),
                    ]
                )
                + " |"
            )
        lines.append("")
    busy = [c for c in result["cells"] if max(c.get("other_load", {}).values(), default=0) > 0.1]
    lines += [
        "A load core near 100 % means the client + upstream, not the gateway, set the limit "
        "for that row (direct shows the load generator's own ceiling). *other procs*: CPU "
        "used during the window by processes this run did not start, on the gateway core / "
        "the load core.",
        "",
    ]
    if busy:
        lines += [
            f"**Caution:** in {len(busy)} of {len(result['cells'])} cells other processes used "
            "more than 10 % of a core during the window; those rows understate what the "
            "parties could do on an idle machine.",
            "",
        ]
    lines += [
        "### Where p99 degrades",
        "",
        "| workload | gateway | low-concurrency p99 ms | degrades at | why | sustains |",
        "|---|---|---:|---:|---|---:|",
    ]
    for d in analysis["degradation"].values():
        degrades = (
            d["degrades_at"]
            if d["degrades_at"] is not None
            else (f"> {d['highest_tested']} (not seen)")
        )
        lines.append(
            f"| {d['workload']} | {d['gateway']} | {_f(d['baseline_p99_ms'])} | {degrades} "
            f"| {d['reason'] or '-'} | {_f(d['sustains'])} |"
        )
    short = analysis.get("short_answers") or []
    if short:
        lines += [
            "",
            "### Short answers: requests per socket",
            "",
            "One-chunk answers. *sluice*: every request in flight shares one chatStream "
            "socket; *direct* and *peer*: that many SSE requests at once. CPU per request is "
            "the gateway's /proc time over the window / requests completed in it.",
            "",
            "| in flight | target | req/s | x direct | TTFC p50 ms | added TTFC | "
            "CPU ms/request | gw core | load core | 10k requests s | errors |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in short:
            util = r.get("gateway_core_util")
            lines.append(
                f"| {r['concurrency']} | {r['target']} | {_f(r['requests_per_s'], 0)} "
                f"| {_f(r['ratio_to_direct'])} | {_f(r['ttfc_p50_ms'])} "
                f"| {_f(r['added_ttfc_p50_ms'])} | {_f(r['gateway_cpu_ms_per_request'], 3)} "
                f"| {f'{util:.0%}' if util is not None else '-'} "
                f"| {r['load_core_util']:.0%} | {_f(r['seconds_for_10k'])} | {r['errors']} |"
            )
    lines += _redis_lines(result["cells"])
    idle = result.get("idle_sockets") or {}
    lines += [
        "",
        "### Memory per idle socket",
        "",
        f"{idle.get('sockets_opened')} idle chatStream sockets (of {idle.get('sockets_requested')}"
        f" asked): Sluice RSS {idle.get('rss_before_mb')} -> {idle.get('rss_after_mb')} MB, "
        f"**{_f(idle.get('kb_per_socket'), 1)} KB per socket**.",
        "",
        "### Targets (reported, not asserted)",
        "",
        "| target | goal | measured | result |",
        "|---|---|---:|---|",
    ]
    for t in analysis["targets"]:
        measured = t.get("measured")
        digits = 0 if t.get("unit") in ("streams", "chunks/s") else 3
        shown = (
            f"{_f(measured, digits)} {t.get('unit', '')}".strip() if measured is not None else "-"
        )
        lines.append(f"| {t['target']} | {t['goal']} | {shown} | {t['note']} |")
    profile = result.get("profile")
    if profile and "top_own_time" in profile:
        lines += [
            "",
            f"### Profile (cProfile, {profile['workload']} x{profile['concurrency']}; "
            f"full listing in `{profile['file']}`)",
            "",
            _gc_line(profile.get("gc")),
            "",
            "| function | own time s | share | calls |",
            "|---|---:|---:|---:|",
        ]
        for row in profile["top_own_time"][:10]:
            lines.append(
                f"| `{row['function']}` | {row['own_s']} | {row['share']:.1%} | {row['calls']} |"
            )
    plots = result.get("plots") or []
    if plots:
        lines += ["", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(lines) + "\n"


def _redis_lines(cells: list[dict[str, Any]]) -> list[str]:
    """The request log's cost in Redis per Sluice cell (runs with `--resume-redis`)."""
    rows = [c for c in cells if c.get("redis")]
    if not rows:
        return []
    lines = [
        "",
        "### Request log on Redis",
        "",
        "Per Sluice cell, from Redis's counters (warm-up included): round trips (the "
        "log's `EVALSHA` calls: one per flush for every request with frames pending, one "
        "per lease renewal), Redis commands (those the scripts run included), bytes "
        "received, Redis's own CPU (`INFO cpu`, the whole server), and `MEMORY USAGE` of "
        "the workload's finished streams (with their `:fence` and `:meta` keys) over the "
        "frames they hold.",
        "",
        "| workload | streams | round trips / request | round trips / 1k chunks "
        "| commands / request | commands / 1k chunks | bytes in / 1k chunks "
        "| Redis CPU ms / 1k chunks | frames / stream | bytes / stream | Redis bytes / 1k frames |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in rows:
        r = cell["redis"]
        memory = r.get("memory", {})
        values = [
            f"{cell['workload']} x{cell['concurrency']}",
            str(memory.get("streams_measured")),
            _f(r.get("round_trips_per_request"), 3),
            _f(r.get("round_trips_per_1k_chunks"), 1),
            _f(r.get("commands_per_request"), 1),
            _f(r.get("commands_per_1k_chunks"), 0),
            _f(r.get("bytes_in_per_1k_chunks"), 0),
            _f(r.get("redis_cpu_ms_per_1k_chunks"), 1),
            _f(memory.get("frames_per_stream"), 1),
            _f(memory.get("bytes_per_stream"), 0),
            _f(memory.get("bytes_per_1k_frames"), 0),
        ]
        lines.append("| " + " | ".join(values) + " |")
    return lines
