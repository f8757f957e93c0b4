"""What starts a config reload: SIGHUP, `sluice reload`, and a watched config file.

- `on_sighup(loop, reload)`: SIGHUP runs `reload()` on the event loop. In a single
  process `reload` is the app's `Reloader.reload`; a supervisor re-reads the file
  for the workers it will start later and forwards the signal to every worker,
  and each worker reloads itself.
- The pidfile: `sluice serve` writes its pid (the supervisor's, with `--workers N`)
  to `--pidfile` (default `pidfile_for(port)`); `sluice reload` reads it, checks
  the config file first when given one, and sends SIGHUP (`send_reload`).
  A signal needs no listening port, no credentials and reaches every worker.
- `watch_file(path, on_change)`: with `server.watch_config: true`, the file is
  polled every `WATCH_SECONDS`; a change of its content starts a reload. Stat
  follows symlinks, so a Kubernetes ConfigMap update (an atomic symlink swap)
  counts as a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from config import check_config

log = logging.getLogger("sluice.reload")

WATCH_SECONDS = 2.0
"""How often a watched config file is checked."""


def on_sighup(loop: asyncio.AbstractEventLoop, reload: Callable[[], object]) -> None:
    """Run `reload()` on `loop` at every SIGHUP (the signal's default, to exit, is gone)."""

    def hangup() -> None:
        log.info("signal received: reloading the config", extra={"signal": "SIGHUP"})
        reload()

    loop.add_signal_handler(signal.SIGHUP, hangup)


def _fingerprint(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


async def watch_file(
    path: str, on_change: Callable[[], object], interval: float = WATCH_SECONDS
) -> None:
    """Until cancelled: call `on_change()` each time the content of `path` changes
    (checked every `interval` seconds; a file that cannot be read is not a change,
    so a half-written or briefly missing file waits for the next look)."""
    file = Path(path)
    last = _fingerprint(file)
    while True:
        await asyncio.sleep(interval)
        now = _fingerprint(file)
        if now is not None and now != last:
            last = now
            log.info("config file changed: reloading", extra={"file": path})
            on_change()


def pidfile_for(port: int) -> str:
    """The default pidfile of a server on `port`: in $XDG_RUNTIME_DIR, else the temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"sluice-{port}.pid")


def write_pidfile(path: str) -> None:
    """Write this process's pid to `path` (logged, not fatal, when it cannot)."""
    try:
        Path(path).write_text(f"{os.getpid()}\n")
    except OSError as error:
        log.warning(
            "cannot write the pidfile: `sluice reload` will not find this server",
            extra={"pidfile": path, "error": error.strerror},
        )


def remove_pidfile(path: str) -> None:
    """Remove `path` if it still names this process."""
    with contextlib.suppress(OSError, ValueError):
        if int(Path(path).read_text().strip()) == os.getpid():
            os.remove(path)


def _looks_like_sluice(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pidfile
    return b"sluice" in cmdline or b"server.py" in cmdline


def send_reload(pidfile: str, config: str | None = None) -> int:
    """`sluice reload`: (pidfile, the config file to check first) in; SIGHUP sent
    to the server and 0 out, or a message on stderr and 1 (invalid config, no
    server). The server logs the outcome and counts it in /metrics."""
    if config is not None:
        problems = check_config(config)
        if problems:
            for problem in problems:
                print(problem, file=sys.stderr)
            print("sluice reload: the config has problems; nothing was sent", file=sys.stderr)
            return 1
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError) as error:
        print(f"sluice reload: cannot read the pidfile {pidfile}: {error}", file=sys.stderr)
        return 1
    if not _looks_like_sluice(pid):
        print(f"sluice reload: pid {pid} in {pidfile} is not a Sluice server", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as error:
        print(f"sluice reload: cannot signal pid {pid}: {error.strerror}", file=sys.stderr)
        return 1
    print(
        f"sent SIGHUP to Sluice (pid {pid}); its log says 'config reloaded' or "
        "'config reload rejected' (sluice_config_reloads_total counts both)"
    )
    return 0


class Triggers:
    """The reload triggers of one serving process (single, or a supervisor):
    SIGHUP, the pidfile and, with `watch`, the watched config file."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        reload: Callable[[], object],
        *,
        watch: str | None = None,
        pidfile: str | None = None,
    ) -> None:
        on_sighup(loop, reload)
        self._pidfile = pidfile
        if pidfile is not None:
            write_pidfile(pidfile)
        self._watching = loop.create_task(watch_file(watch, reload)) if watch else None

    def stop(self) -> None:
        """Stop watching and remove the pidfile (SIGHUP keeps reloading until exit)."""
        if self._watching is not None:
            self._watching.cancel()
        if self._pidfile is not None:
            remove_pidfile(self._pidfile)
