"""What every benchmark suite shares: child processes, /proc accounting, machine facts.

A suite starts each party (upstream, gateway, peer, load client) as its own process
through `Processes`, pinned with `taskset`, so each one's CPU time and peak memory
come from the kernel's own accounting (`/proc/<pid>/stat`, `/proc/<pid>/status`).
`Processes` stops every child it started when its `with` block ends, on error and
on Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root (where `server.py` lives)."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of stat(5)); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and its live child processes (a supervisor and its workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [pid, *(int(c) for c in f.read().split())]
    except OSError:
        return [pid]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and of its live child processes (a supervisor's workers)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            continue
    return total


def tree_memory_kb(pid: int) -> dict[str, int]:
    """`VmRSS` and `VmHWM` summed over `pid` and its live child processes, in KiB."""
    out = {"VmRSS": 0, "VmHWM": 0}
    for member in process_tree(pid):
        try:
            for key, value in memory_kb(member).items():
                out[key] = out.get(key, 0) + value
        except OSError:
            continue
    return out


def reset_tree_peak_rss(pid: int) -> bool:
    """`reset_peak_rss` for `pid` and its live child processes; False if any refused."""
    return all([reset_peak_rss(member) for member in process_tree(pid)])


def core_busy_seconds() -> dict[str, float]:
    """Busy (non-idle, non-iowait) CPU seconds per core since boot, from /proc/stat."""
    out: dict[str, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            ticks = [int(v) for v in values[:8]]
            # user nice system idle iowait irq softirq steal: busy = all but idle, iowait
            out[name[3:]] = (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS
    return out


def memory_kb(pid: int) -> dict[str, int]:
    """`VmRSS` and `VmHWM` (peak RSS) of `pid`, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def reset_peak_rss(pid: int) -> bool:
    """Reset `pid`'s VmHWM to its current RSS (clear_refs 5); False if the kernel refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def cpu_count() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def core_layout() -> tuple[str, str]:
    """(gateway cores, load cores) for `taskset -c`: the gateway gets core 0, the rest load.

    On a single-core machine both share core 0 (the report says so).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) == 1:
        return str(cores[0]), str(cores[0])
    return str(cores[0]), ",".join(str(c) for c in cores[1:])


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts(extra_packages: Sequence[str] = ()) -> dict[str, Any]:
    """CPU model, cores, memory, kernel, Python, package versions and git commit."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    packages = ["aiohttp", "reactivex", "pydantic", "numpy", "orjson", "matplotlib"]
    packages += list(extra_packages)
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "cores_usable": cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": {name: _package_version(name) for name in packages},
        "node": _command_output(["node", "--version"]),
        "git_commit": _command_output(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        "git_dirty": bool(_command_output(["git", "-C", str(ROOT), "status", "--porcelain"])),
        "taskset": shutil.which("taskset") is not None,
        "fd_limit": _fd_limit(),
        "clock_ticks_per_s": CLOCK_TICKS,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _fd_limit() -> list[int]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [soft, hard]


def _command_output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@dataclass
class Child:
    """One started process: its name, `Popen`, and where its output goes."""

    name: str
    popen: subprocess.Popen[str]
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        """The process id (taskset execs, so this is the measured program itself)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its log (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Processes:
    """Starts children and guarantees they are all stopped when the `with` block ends.

    SIGINT and SIGTERM delivered to the suite raise KeyboardInterrupt, so Ctrl-C and a
    supervisor's TERM both unwind through `__exit__`, which stops every child (TERM,
    then KILL after `grace` seconds).
    """

    log_dir: Path
    grace: float = 5.0
    children: list[Child] = field(default_factory=list)
    _old_handlers: dict[int, Any] = field(default_factory=dict)

    def __enter__(self) -> Processes:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # SIGINT too: a shell starts background jobs with SIGINT ignored
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, _raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in self._old_handlers:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
        try:
            self.stop_all()
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cores: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int | None = subprocess.DEVNULL,
        capture_stdout: bool = False,
    ) -> Child:
        """Start `argv` (under `taskset -c cores` when given); stderr goes to a log file."""
        command = list(argv)
        if cores is not None and shutil.which("taskset"):
            command = ["taskset", "-c", cores, *command]
        log_path = self.log_dir / f"{name}.log"
        log: IO[str] = open(log_path, "a")
        popen = subprocess.Popen(
            command,
            stdin=stdin,
            stdout=subprocess.PIPE if capture_stdout else log,
            stderr=log,
            text=True,
            cwd=str(cwd or ROOT),
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()
        child = Child(name, popen, log_path)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        """Stop one child: SIGTERM to its process group, SIGKILL after the grace period."""
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            try:
                child.popen.wait(self.grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.popen.wait(self.grace)
        for stream in (child.popen.stdin, child.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        for child in reversed(list(self.children)):
            self.stop(child)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def wait_for_port(port: int, child: Child, within: float = 30.0) -> None:
    """Return once 127.0.0.1:`port` accepts connections; raise if `child` dies or time runs out."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not listen on port {port} within {within} s")


def wait_idle(pid: int, *, below: float = 0.05, window: float = 0.3, within: float = 15.0) -> float:
    """Wait until `pid` uses less than `below` of a core over `window` s; return seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        before = cpu_seconds(pid)
        time.sleep(window)
        if (cpu_seconds(pid) - before) / window < below:
            break
    return time.monotonic() - start


class Progress:
    """A one-line progress bar on stderr: `[ 3/24] 12% paced c=50 sluice  eta 4m10s`."""

    def __init__(self, total: int, stream: IO[str] | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.started = time.monotonic()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = ""

    def show(self, label: str) -> None:
        """Redraw with `label` for the step now running."""
        elapsed = time.monotonic() - self.started
        eta = ""
        if self.done:
            eta = f" eta {_minutes(elapsed / self.done * (self.total - self.done))}"
        width = 20
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        line = f"[{bar}] {self.done}/{self.total} {_minutes(elapsed)}{eta}  {label}"
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last)))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last = line

    def step(self) -> None:
        """Count one finished step."""
        self.done += 1

    def close(self) -> None:
        """End the line."""
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


@contextlib.contextmanager
def raised_fd_limit(wanted: int) -> Iterator[int]:
    """Raise this process's soft fd limit toward `wanted` (up to the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield target
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: "-" for a missing figure, a float to `digits` places, else str()."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def machine_line(machine: dict[str, Any]) -> str:
    """The report's "Machine: ..." line (CPU, cores, Python, commit, dirty) from
    `machine_facts()`."""
    return (
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores, Python "
        f"{machine.get('python', '?')}, commit {str(machine.get('git_commit') or '?')[:10]}"
        f"{' (dirty)' if machine.get('git_dirty') else ''}.  "
    )
