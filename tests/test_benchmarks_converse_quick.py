"""Smoke run of the converse suite: `python -m benchmarks converse --quick` gives every
figure. It checks that the figures exist and are well-formed, never that they are fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = ("count", "p50", "p90", "p99", "max", "cdf")
STAGES = ("v2v_ms", "added_ms", "vad_ms", "stt_ms", "llm_ms", "tts_ms")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_quick_converse_run_writes_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "converse", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (run,) = tmp_path.glob("converse-*.json")
    result: dict[str, Any] = json.loads(run.read_text())
    assert result["settings"]["quick"] is True
    levels = result["settings"]["levels"]
    turns = result["settings"]["turns"]
    # the largest quick level also runs with arrivals spread over one turn, spread first
    cells = [(c["concurrency"], c["arrival"]) for c in result["cells"]]
    assert cells == [(1, "together"), (10, "spread"), (10, "together")], cells
    assert levels == [1, 10]
    for cell in result["cells"]:
        assert cell["errors"] == 0, cell["error_samples"]
        assert cell["turns"] == cell["concurrency"] * turns
        for dist in STAGES:
            assert all(key in cell[dist] for key in DISTRIBUTION), dist
        # voice-to-voice is at least the engines' own time
        assert cell["v2v_ms"]["p50"] >= result["engines_ms"]
        # the direct reference (no Sluice) made every call of its chains
        direct = cell["direct"]
        for dist in ("chain_ms", "stt_ms", "llm_ms", "tts_ms"):
            assert all(key in direct[dist] for key in DISTRIBUTION), dist
        rounds = 10 if cell["arrival"] == "together" else 4
        assert direct["rounds"] == rounds
        assert direct["chain_ms"]["count"] == cell["concurrency"] * rounds
        assert direct["chain_ms"]["p50"] >= result["engines_ms"] - result["settings"]["hangover_ms"]
        assert cell["gateway_peak_rss_mb"] > 0
    assert "| conversations | arrival | turns | v2v p50 ms |" in done.stdout
    assert "| direct p50 | p99 | beyond direct p50 |" in done.stdout
    assert "| 10 | spread | 20 |" in done.stdout
    assert "| 10 | together | 20 |" in done.stdout
    assert "| conversations | arrival | turns |" in (tmp_path / "latest.md").read_text()
