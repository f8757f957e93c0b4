"""What one worker process gets from its supervisor, and how it keeps watch on it.

`WorkerSpec` flows from the supervisor into the spawned process (pickled as the
process argument: the shared limit store must travel this way). In the worker,
`tag_logs(spec)` marks every log line with the worker's slot and pid, and
`watch_supervisor(loop, stop)` sets `stop` (a drain) if the supervisor dies.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from dataclasses import dataclass

from config.models import SluiceConfig
from security.limits import LimitStore

log = logging.getLogger("sluice.worker")


@dataclass(frozen=True)
class WorkerSpec:
    """Worker `slot` of `workers`: serve `config` on host:port (shared with the others),
    count limits in `limits`, write metrics to `metrics_dir`; SIGHUP reloads
    `config_path` (None: the embedded default)."""

    slot: int
    workers: int
    host: str
    port: int
    config: SluiceConfig
    limits: LimitStore
    metrics_dir: str
    config_path: str | None = None


class _WorkerFields(logging.Filter):
    def __init__(self, slot: int) -> None:
        super().__init__()
        self._slot = slot
        self._pid = os.getpid()

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._slot
        record.pid = self._pid
        return True


def tag_logs(spec: WorkerSpec) -> None:
    """Every log line this process writes gets `worker` (slot) and `pid` fields."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerFields(spec.slot))


def watch_supervisor(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set `stop` when the supervisor process ends (its sentinel pipe closes), so an
    orphaned worker drains and exits instead of serving on forever."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def gone() -> None:
        loop.remove_reader(sentinel)
        if not stop.is_set():
            log.warning("supervisor gone: draining")
            stop.set()

    loop.add_reader(sentinel, gone)
