"""Smoke run of the embed suite: `python -m benchmarks embed --quick` gives every figure.

It checks that the figures exist and are well-formed, never that they are fast.
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


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_quick_embed_run_writes_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "embed", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    [run] = list(tmp_path.glob("embed-*.json"))
    result = json.loads(run.read_text())
    for key in ("cpu_model", "cores", "python", "git_commit"):
        assert key in result["machine"]
    assert result["settings"]["quick"] is True
    levels = result["settings"]["levels"]
    cells = {(c["concurrency"], c["target"]): c for c in result["cells"]}
    assert set(cells) == {(lvl, t) for lvl in levels for t in ("direct", "sluice")}
    for (_, target), cell in cells.items():
        assert cell["errors"] == 0, cell["error_samples"]
        assert cell["requests"] == result["settings"]["requests"] or cell["requests"] > 0
        assert all(key in cell["latency_ms"] for key in DISTRIBUTION)
        assert _number(cell["requests_per_s"])
        assert _number(cell["upstream_cpu_ms_per_request"])
        if target == "sluice":
            assert _number(cell["gateway_cpu_ms_per_request"])
            assert _number(cell["requests_per_core_s"])
    assert [r["concurrency"] for r in result["comparisons"]] == levels
    for row in result["comparisons"]:
        assert _number(row["added_p50_ms"]) and _number(row["requests_per_core_s"])
    assert "requests per second per core" in done.stdout
    assert "| 1 | sluice |" in done.stdout
