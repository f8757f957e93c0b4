"""Smoke run of the scaling suite: `python -m benchmarks scaling --quick` yields every figure.

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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_scaling_run_writes_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "scaling", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    runs = list(tmp_path.glob("scaling-*.json"))
    assert len(runs) == 1
    result = json.loads(runs[0].read_text())
    assert result["settings"]["quick"] is True
    workers = result["settings"]["workers"]
    assert [layout["workers"] for layout in result["layouts"]] == [1, workers]
    assert result["layouts"][1]["shared"] is True

    cells = {(c["layout"], c["workload"]): c for c in result["cells"]}
    assert set(cells) == {
        (layout["name"], w) for layout in result["layouts"] for w in ("paced", "burst")
    }
    for cell in cells.values():
        assert cell["errors"] == 0, cell["error_samples"]
        assert cell["chunks"] > 0 and cell["requests"] > 0
        for key in ("chunks_per_s", "gateway_cores_used", "gateway_cpu_ms_per_1k_chunks"):
            assert _number(cell[key]), key
        later = cell["latency_later_ms"]
        assert later["p50"] <= later["p99"] <= later["max"]
        watched = set(cell["cpu_s"]) - {"client", "upstream"}
        assert len(watched) == (1 if cell["workers"] == 1 else 1 + workers)  # supervisor + workers

    markdown = (tmp_path / "latest.md").read_text()
    assert "shared with the gateway" in markdown
    assert markdown.count("| paced |") == 2 and markdown.count("| burst |") == 2
