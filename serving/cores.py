"""How many cores this process may use: the default number of workers."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPU affinity mask's size, lowered to the cgroup's CPU quota when one is set.

    In: the cgroup v2 `cpu.max` file (`"<quota> <period>"` or `"max <period>"`).
    Out: at least 1. A container limited to 2 CPUs on a 64-core node gets 2.
    """
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return max(1, cores)
    if quota != "max" and int(period) > 0:
        cores = min(cores, math.ceil(int(quota) / int(period)))
    return max(1, cores)
