"""Smoke runs of the speech suites: `python -m benchmarks speak|listen --quick` give every figure.

They check that the figures exist and are well-formed, never that they are fast.
"""

from __future__ import annotations

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


def _run(suite: str, out: Path) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", suite, "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    runs = list(out.glob(f"{suite}-*.json"))
    assert len(runs) == 1
    result: dict[str, Any] = json.loads(runs[0].read_text())
    for key in ("cpu_model", "cores", "python", "git_commit"):
        assert key in result["machine"]
    assert result["settings"]["quick"] is True
    return result, done.stdout


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_quick_speak_run_writes_every_figure(tmp_path: Path) -> None:
    result, stdout = _run("speak", tmp_path)
    levels = result["settings"]["levels"]
    cells = {(c["engine"], c["concurrency"], c["target"]): c for c in result["cells"]}
    assert set(cells) == {
        (e, lvl, t) for e in ("fake", "local") for lvl in levels for t in ("direct", "sluice")
    }
    for (engine, _, target), cell in cells.items():
        assert cell["errors"] == 0, cell["error_samples"]
        assert cell["requests"] > 0
        for dist in ("ttfb_ms", "ttlb_ms"):
            assert all(key in cell[dist] for key in DISTRIBUTION), dist
        if engine == "fake":
            assert all(key in cell["chunk_lateness_ms"] for key in DISTRIBUTION)
        if target == "sluice":
            assert _number(cell["gateway_cpu_ms_per_request"])
            assert cell["gateway_peak_rss_mb"] > 0
    rows = result["comparisons"]
    assert len(rows) == 2 * len(levels)
    for row in rows:
        assert _number(row["added_ttfb_p50_ms"]) and _number(row["added_ttfb_p99_ms"])
        if row["engine"] == "fake":
            assert _number(row["added_chunk_p50_ms"])
    assert "| engine | streams | target |" in stdout
    assert "| engine | streams | target |" in (tmp_path / "latest.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_quick_listen_run_writes_every_figure(tmp_path: Path) -> None:
    result, stdout = _run("listen", tmp_path)
    levels = result["settings"]["levels"]
    assert len(levels) == 2
    cells = {(c["engine"], c["concurrency"]): c for c in result["cells"]}
    assert set(cells) == {(e, lvl) for e in ("fake", "local") for lvl in levels}
    for (engine, _), cell in cells.items():
        assert cell["segments"] == cell["segments_expected"] > 0, cell["errors"]
        for dist in ("eos_to_final_ms", "added_ms", "client_lag_ms"):
            assert all(key in cell[dist] for key in DISTRIBUTION), dist
        if engine == "fake":
            assert all(key in cell["inbound_ms"] for key in DISTRIBUTION)
        assert _number(cell["gateway_cpu_ms_per_audio_s"]) and cell["gateway_peak_rss_mb"] > 0
    assert set(result["local_decode_ms"]) and all(
        _number(v) for v in result["local_decode_ms"].values()
    )
    for engine in ("fake", "local"):
        verdict = result["capacity"][engine]
        assert verdict["sustains"] in levels or verdict["degrades_at"] in levels
    assert "| engine | streams | segments |" in stdout
