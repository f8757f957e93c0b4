"""A real `redis-server` on a free 127.0.0.1 port, no persistence (`--save ''
--appendonly no`), for tests of `state.redis`.

    server = RedisServer(); server.start()   -> server.url is redis://127.0.0.1:PORT/0
    server.stop(); server.start()            -> the same port again, empty (a restart)

`scripts/system-deps.sh` (run by `make test`) installs it; when it is missing the
test fails naming the package.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One `redis-server` process on loopback; `start` / `stop` as often as needed."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts connections (at most 10 s)."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is missing: run `make system-deps` "
                "(Debian: sudo apt-get install redis-server)"
            )
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self._process.poll() is not None:
                    pytest.fail(f"redis-server exited with {self._process.returncode}")
                time.sleep(0.01)
        pytest.fail(f"redis-server did not listen on 127.0.0.1:{self.port} within 10 s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); its data is gone."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
