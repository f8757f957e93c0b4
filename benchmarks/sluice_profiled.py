"""Run `server.py`'s `main` under cProfile, timing every garbage collection too.

cProfile charges a cyclic-GC pause to whichever function happened to allocate when
the collector ran, so a function that only builds a closure can look slow. The
`gc.callbacks` hook here measures the pauses themselves, by generation, so the
profile's reader can tell the two apart.

    python -m benchmarks.sluice_profiled --cprofile out.prof --gc-stats gc.json \\
        -- serve --config sluice.yaml --port 9099

Both files are written when the server exits (SIGTERM / SIGINT stop it cleanly).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT


class GCTimer:
    """Counts collections and sums their pauses per generation (via `gc.callbacks`)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.collected = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """The `gc.callbacks` hook: `start` / `stop` of one collection."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = int(info["generation"])
        took = time.perf_counter() - self._started
        self.count[generation] += 1
        self.seconds[generation] += took
        self.longest[generation] = max(self.longest[generation], took)
        self.collected[generation] += int(info.get("collected", 0))

    def report(self, wall: float) -> dict[str, Any]:
        """Per generation: collections, total and longest pause (s), objects collected."""
        return {
            "wall_s": round(wall, 3),
            "gc_s": round(sum(self.seconds), 4),
            "thresholds": list(gc.get_threshold()),
            "generations": [
                {
                    "generation": g,
                    "collections": self.count[g],
                    "pause_s": round(self.seconds[g], 4),
                    "longest_ms": round(self.longest[g] * 1e3, 2),
                    "collected": self.collected[g],
                }
                for g in range(3)
            ],
        }


def main(argv: list[str] | None = None) -> None:
    """Parse `--cprofile`, `--gc-stats`, then run `server.main(<the rest>)`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cprofile", type=Path, help="write cProfile stats here")
    parser.add_argument("--gc-stats", type=Path, help="write GC pause stats (JSON) here")
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    server_args = [a for a in args.server_args if a != "--"]
    sys.path.insert(0, str(ROOT))
    import server

    timer = GCTimer()
    gc.callbacks.append(timer)
    profiler = cProfile.Profile() if args.cprofile else None
    started = time.perf_counter()
    try:
        if profiler is not None:
            profiler.enable()
        server.main(server_args)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.cprofile))
        gc.callbacks.remove(timer)
        if args.gc_stats:
            args.gc_stats.write_text(json.dumps(timer.report(time.perf_counter() - started)))


if __name__ == "__main__":
    main()
