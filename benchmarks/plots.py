"""PNG plots of a chat run (matplotlib, headless): latency CDFs and added latency.

`chat_plots(result, out_dir, prefix)` -> the file names it wrote (empty when
matplotlib is not installed: the JSON and the Markdown never depend on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"direct": "#555555", "sluice": "#1f77b4", "peer": "#d62728"}


def chat_plots(result: dict[str, Any], out_dir: Path, prefix: str) -> list[str]:
    """Write `<prefix>-cdf.png` and `<prefix>-added.png`; return their names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    # streams only: one-chunk answers have no later chunks to plot
    cells = [c for c in result["cells"] if c.get("latency_later_ms", {}).get("count")]
    workloads = list(dict.fromkeys(c["workload"] for c in cells))
    levels = sorted({c["concurrency"] for c in cells})
    written: list[str] = []

    fig, axes = plt.subplots(
        len(workloads),
        len(levels),
        figsize=(3.2 * len(levels), 3.0 * len(workloads)),
        squeeze=False,
        sharey=True,
    )
    for row, workload in enumerate(workloads):
        for col, level in enumerate(levels):
            ax = axes[row][col]
            for cell in cells:
                if cell["workload"] != workload or cell["concurrency"] != level:
                    continue
                cdf = cell.get("latency_later_ms", {}).get("cdf")
                if not cdf:
                    continue
                values = [max(v, 1e-3) for v in cdf["ms"]]
                ax.plot(values, cdf["q"], label=cell["target"], color=COLORS.get(cell["target"]))
            ax.set_xscale("log")
            ax.set_title(f"{workload}, {level} streams", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            if row == len(workloads) - 1:
                ax.set_xlabel("chunk latency, ms (log)")
            if col == 0:
                ax.set_ylabel("fraction of chunks")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Per-chunk latency CDF (upstream send → client receive): direct vs Sluice vs peer")
    fig.tight_layout()
    name = f"{prefix}-cdf.png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    written.append(name)

    comparisons = result["analysis"]["comparisons"]
    fig, axes = plt.subplots(2, len(workloads), figsize=(5.5 * len(workloads), 7), squeeze=False)
    for col, workload in enumerate(workloads):
        top, bottom = axes[0][col], axes[1][col]
        for gateway in ("sluice", "peer"):
            rows = [c for c in comparisons if c["workload"] == workload and c["gateway"] == gateway]
            if not rows:
                continue
            xs = [r["concurrency"] for r in rows]
            color = COLORS[gateway]
            top.plot(
                xs,
                [r["added_p50_ms"] for r in rows],
                "o-",
                color=color,
                label=f"{gateway} added p50",
            )
            top.plot(
                xs,
                [r["added_p99_ms"] for r in rows],
                "s--",
                color=color,
                label=f"{gateway} added p99",
            )
            bottom.plot(
                xs, [r["cpu_ms_per_1k_chunks"] for r in rows], "o-", color=color, label=gateway
            )
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xticks(levels, [str(level) for level in levels])
            ax.minorticks_off()
        top.set_yscale("symlog", linthresh=1.0)
        top.axhline(0, color="black", linewidth=0.5)
        top.set_title(f"{workload}: latency added per chunk vs direct")
        top.set_ylabel("ms (symlog)")
        top.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=8)
        bottom.set_title(f"{workload}: gateway CPU per 1,000 chunks")
        bottom.set_xlabel("concurrent streams")
        bottom.set_ylabel("CPU ms")
        bottom.grid(True, which="both", alpha=0.3)
        bottom.legend(fontsize=8)
    fig.tight_layout()
    name = f"{prefix}-added.png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    written.append(name)
    return written
