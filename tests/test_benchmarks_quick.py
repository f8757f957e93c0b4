"""Smoke run of the benchmark suite: `python -m benchmarks chat --quick` yields every figure.

It checks that the figures exist and are well-formed, never that they are fast.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = ("count", "p50", "p90", "p99", "max", "cdf")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_chat_run_writes_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "chat",
            "--quick",
            "--no-peer",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    runs = list(tmp_path.glob("chat-*.json"))
    assert len(runs) == 1
    result = json.loads(runs[0].read_text())

    machine = result["machine"]
    for key in ("cpu_model", "cores", "python", "packages", "git_commit", "started_at"):
        assert key in machine
    assert result["settings"]["quick"] is True
    assert result["peer"]["available"] is False
    assert result["layout"]["gateway_cores"] != "" and result["layout"]["load_cores"] != ""

    levels = result["settings"]["levels"]
    every = {(c["workload"], c["concurrency"], c["target"]): c for c in result["cells"]}
    cells = {key: cell for key, cell in every.items() if key[0] != "short"}
    short = {key: cell for key, cell in every.items() if key[0] == "short"}
    assert set(cells) == {
        (w, lvl, t) for w in ("paced", "burst") for lvl in levels for t in ("direct", "sluice")
    }
    assert set(short) == {("short", lvl, t) for lvl in (1, 64) for t in ("direct", "sluice")}
    for (_, _, target), cell in short.items():
        assert cell["errors"] == 0, cell["error_samples"]
        # one content chunk per answer; at either edge of the window an answer may have
        # its chunk counted and not its finish, or the other way round (one per stream)
        assert cell["requests"] > 0 and cell["chunks"] > 0
        assert abs(cell["chunks"] - cell["requests"]) <= cell["concurrency"]
        if target == "sluice":
            assert _number(cell["gateway_cpu_ms_per_request"])
    for (_, _, target), cell in cells.items():
        assert cell["errors"] == 0, cell["error_samples"]
        assert cell["chunks"] > 0 and cell["requests"] > 0
        assert _number(cell["chunks_per_s"]) and _number(cell["requests_per_s"])
        for dist in ("latency_later_ms", "ttfc_ms", "latency_first_ms"):
            assert all(key in cell[dist] for key in DISTRIBUTION), dist
        later = cell["latency_later_ms"]
        assert later["p50"] <= later["p90"] <= later["p99"] <= later["max"]
        if target == "sluice":
            assert "gateway_cpu_ms_per_1k_chunks" in cell
            assert cell["gateway_peak_rss_mb"] > 0

    analysis = result["analysis"]
    added = [c for c in analysis["comparisons"] if c["gateway"] == "sluice"]
    assert len(added) == 2 * len(levels)
    for row in added:
        for key in ("added_p50_ms", "added_p99_ms", "ratio_p50", "added_ttfc_p50_ms"):
            assert _number(row[key]), key
    assert {"paced/sluice", "burst/sluice"} <= set(analysis["degradation"])
    assert len(analysis["targets"]) == 10
    rows = analysis["short_answers"]
    assert {(r["concurrency"], r["target"]) for r in rows} == set((lvl, t) for _, lvl, t in short)
    assert all(_number(r["seconds_for_10k"]) for r in rows)

    idle = result["idle_sockets"]
    assert idle["sockets_opened"] == idle["sockets_requested"] > 0
    assert _number(idle["kb_per_socket"])

    latest = (tmp_path / "latest.md").read_text()
    assert "| streams | target |" in latest and "### Targets" in latest
    assert "| streams | target |" in done.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert result["plots"] and all((tmp_path / name).exists() for name in result["plots"])
