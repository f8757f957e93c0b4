"""The supervisor of `sluice serve --workers N`: N processes serving one port.

    Supervisor(config, host, port, workers, target).run() -> exit status

- Start: checks that nothing else listens on host:port, prepares the shared
  state every worker needs (a fresh prometheus multiprocess directory, the
  shared limit store), then spawns the workers (`multiprocessing`'s spawn, so
  each imports prometheus-client with `PROMETHEUS_MULTIPROC_DIR` already set).
  Each worker binds the port with SO_REUSEPORT and runs its own event loop;
  the kernel spreads new connections over them.
- A worker that dies is logged (pid, exit status or signal) and restarted on
  the same slot; deaths in quick succession back off (`restart_delay`).
- SIGTERM/SIGINT is forwarded to every worker, which drains exactly as a single
  process does; the supervisor exits 0 once all of them exited 0. A second
  signal kills the workers and exits 1 at once.
- SIGHUP (also from `sluice reload`, which finds the supervisor's pid in its
  pidfile, or from a change of the watched config file): the supervisor re-reads
  the config (the one workers it starts from now on get, restart-only sections
  kept) and forwards SIGHUP to every worker; each reloads itself
  (`serving.reload`), logs and counts the outcome.

Workers start with SIGTERM/SIGINT/SIGHUP blocked (they are unblocked once the worker's
handlers are in place, so a signal during start-up still drains) and in their
own process group (a Ctrl-C or `kill -- -<pgid>` reaches the supervisor only,
and each worker sees one signal, not two).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from prometheus_client.multiprocess import mark_process_dead

from config import ConfigError
from config.models import SluiceConfig
from security.limits import LimitPolicy
from security.shared_limits import SharedLimits
from serving.reload import ConfigSource, load_for_reload
from serving.triggers import Triggers
from serving.worker import WorkerSpec

log = logging.getLogger("sluice.supervisor")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
BLOCKED_AT_START = (*STOP_SIGNALS, signal.SIGHUP)
"""Blocked in a new worker until it has its handlers (SIGHUP's default is to exit)."""
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STABLE_AFTER = 10.0
"""A worker that served this many seconds before dying is restarted at once."""

WorkerTarget = Callable[[WorkerSpec], None]
"""The function a worker process runs (a module-level function: it is pickled)."""


class PortInUse(Exception):
    """Another process already listens on the address the workers are to share."""


def restart_delay(quick_deaths: int, first: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before restarting a worker that died `quick_deaths` times in a row
    soon after starting (1 = the first such death): 0, then 0.5, 1, 2, ... up to `cap`."""
    if quick_deaths <= 1:
        return 0.0
    return float(min(cap, first * 2 ** (quick_deaths - 2)))


def describe_exit(exitcode: int | None) -> dict[str, object]:
    """A process's exit code in, log fields out: `exit_status`, or `signal` by name."""
    if exitcode is None:
        return {}
    if exitcode < 0:
        try:
            return {"signal": signal.Signals(-exitcode).name}
        except ValueError:
            return {"signal": -exitcode}
    return {"exit_status": exitcode}


def claim_port(host: str, port: int) -> int:
    """Check that nothing listens on host:`port` (SO_REUSEPORT would otherwise let the
    workers silently share it with another server); the port, or a free one for 0."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                raise PortInUse(f"cannot listen on {host}:{port}: {error.strerror}") from error
            if port == 0:
                port = int(probe.getsockname()[1])
    return port


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart: asyncio.TimerHandle | None = None
    final_exitcode: int | None = None


class Supervisor:
    """Runs `workers` processes of `target` on host:port until a signal drains them."""

    def __init__(
        self,
        config: SluiceConfig,
        host: str,
        port: int,
        workers: int,
        target: WorkerTarget,
        *,
        config_path: str | None = None,
        pidfile: str | None = None,
    ) -> None:
        if workers < 2:
            raise ValueError("a supervisor runs at least two workers")
        self._config = config
        self._host = host
        self._port = port
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(workers)]
        self._stopping = False
        self._done = asyncio.Event()
        self._limits: SharedLimits | None = None
        self._metrics_dir = ""
        self._owns_metrics_dir = False
        self._config_path = config_path
        self._pidfile = pidfile

    def run(self) -> int:
        """Serve until the workers drained (0), or a second signal (1); 2 if the port is taken."""
        try:
            self._port = claim_port(self._host, self._port)
        except PortInUse as error:
            log.error(str(error), extra={"host": self._host, "port": self._port})
            return 2
        self._prepare_metrics_dir()
        try:
            self._limits = SharedLimits.create(
                LimitPolicy.build(self._config.auth, self._config.limits),
                len(self._slots),
                self._context,
            )
            return asyncio.run(self._supervise())
        finally:
            self._kill_all()
            self._remove_metrics_dir()

    def _prepare_metrics_dir(self) -> None:
        """Use $PROMETHEUS_MULTIPROC_DIR (emptied) or a new temporary directory."""
        given = os.environ.get(MULTIPROC_ENV)
        if given:
            os.makedirs(given, exist_ok=True)
            for path in glob.glob(os.path.join(given, "*.db")):
                os.remove(path)
            self._metrics_dir = given
            return
        self._metrics_dir = tempfile.mkdtemp(prefix="sluice-metrics-")
        self._owns_metrics_dir = True
        os.environ[MULTIPROC_ENV] = self._metrics_dir  # inherited by every spawned worker

    def _remove_metrics_dir(self) -> None:
        if self._owns_metrics_dir:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    async def _supervise(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        watch = self._config_path if self._config.server.watch_config else None
        triggers = Triggers(loop, self._on_reload, watch=watch, pidfile=self._pidfile)
        log.info(
            "supervisor starting workers",
            extra={
                "workers": len(self._slots),
                "host": self._host,
                "port": self._port,
                "metrics_dir": self._metrics_dir,
            },
        )
        for slot in self._slots:
            self._start(slot)
        await self._done.wait()
        triggers.stop()
        failed = [s.index for s in self._slots if s.final_exitcode not in (None, 0)]
        log.info("supervisor stopped", extra={"workers_failed": failed})
        return 1 if failed else 0

    def _start(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stopping:
            return
        assert self._limits is not None
        spec = WorkerSpec(
            slot.index,
            len(self._slots),
            self._host,
            self._port,
            self._config,
            self._limits.for_worker(slot.index),
            self._metrics_dir,
            self._config_path,
        )
        process = self._context.Process(
            target=self._target, args=(spec,), name=f"sluice-worker-{slot.index}"
        )
        # blocked in the child until its handlers are installed (see the module docstring)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_AT_START)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        slot.process = process
        slot.started = time.monotonic()
        asyncio.get_running_loop().add_reader(process.sentinel, self._exited, slot)
        log.info("worker started", extra={"worker": slot.index, "pid": process.pid})

    def _exited(self, slot: _Slot) -> None:
        process = slot.process
        assert process is not None and self._limits is not None
        asyncio.get_running_loop().remove_reader(process.sentinel)
        process.join()
        pid = process.pid
        exitcode = process.exitcode
        process.close()
        slot.process = None
        mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        self._limits.reset_worker(slot.index)
        fields = {"worker": slot.index, "pid": pid, **describe_exit(exitcode)}
        if self._stopping:
            slot.final_exitcode = exitcode
            log.info("worker stopped", extra=fields)
            self._check_done()
            return
        lived = time.monotonic() - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if lived < STABLE_AFTER else 1
        delay = restart_delay(slot.quick_deaths)
        log.error(
            "worker died: restarting",
            extra={**fields, "lived_s": round(lived, 3), "restart_in_s": delay},
        )
        slot.restart = asyncio.get_running_loop().call_later(delay, self._start, slot)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            log.warning("second signal: killing the workers", extra={"signal": sig.name})
            self._kill_all()
            self._remove_metrics_dir()
            logging.shutdown()
            os._exit(1)
        self._stopping = True
        live = [s for s in self._slots if s.process is not None]
        log.info(
            "signal received: draining the workers",
            extra={"signal": sig.name, "workers": [s.process.pid for s in live if s.process]},
        )
        for slot in self._slots:
            if slot.restart is not None:
                slot.restart.cancel()
                slot.restart = None
            if slot.process is not None and slot.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, sig)
        self._check_done()

    def _on_reload(self) -> None:
        """SIGHUP: re-read the config for the workers started later, then pass the
        signal on so every running worker reloads itself."""
        if self._stopping:
            return
        try:
            self._config, restart_only = load_for_reload(
                ConfigSource(self._config_path, self._host), self._config
            )
        except ConfigError as error:
            log.error(
                "config reload rejected: workers keep (and restarted ones get) the running config",
                extra={"problems": [str(p) for p in error.problems]},
            )
        else:
            log.info(
                "config re-read: workers started from now on get it",
                extra={"restart_only_fields_kept": restart_only},
            )
        pids = [s.process.pid for s in self._slots if s.process is not None and s.process.pid]
        log.info("forwarding SIGHUP to the workers", extra={"workers": pids})
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    def _check_done(self) -> None:
        if self._stopping and all(s.process is None for s in self._slots):
            self._done.set()

    def _kill_all(self) -> None:
        for slot in self._slots:
            process = slot.process
            if process is not None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(process.pid, signal.SIGKILL)
