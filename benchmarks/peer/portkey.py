"""The Portkey AI gateway (npm `@portkey-ai/gateway`), installed and patched for the benchmark.

`ensure_installed()` runs `npm install` into `benchmarks/.peer/portkey-<version>/` (a
folder holding a `.gitignore` of `*`, so nothing there is ever committed) and then
applies `patch()`: Portkey 1.15.2 fails every streamed answer on Node with
`TypeError: immutable` (its issues #1389 and #1550), because it appends its own
`x-portkey-*` headers to the upstream `Response`, whose headers are immutable. The
patch re-creates that Response with a mutable copy of its headers before they are
appended, and makes the caller use the new Response: the idea of its PR #1551,
applied to the built `start-server.js`. The project's own code is never touched.

    python -m benchmarks.peer.portkey      # install + patch, print the start command
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PACKAGE = "@portkey-ai/gateway"
VERSION = "1.15.2"
PEER_DIR = Path(__file__).resolve().parent.parent / ".peer"
INSTALL_DIR = PEER_DIR / f"portkey-{VERSION}"
ENTRY = INSTALL_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
MARKER = "/* sluice-bench: mutable response headers (Portkey PR #1551 idea) */"

_PATCHES = (
    # updateHeaders(response, cacheStatus, retryAttempt): copy the Response first
    (
        "updateHeaders(e,t,a){return e.headers.append(",
        "updateHeaders(e,t,a){e=new Response(e.body,{status:e.status,statusText:e.statusText,"
        "headers:new Headers(e.headers)});return e.headers.append(",
    ),
    # ResponseService.create: keep the Response that updateHeaders returns
    (
        "this.updateHeaders(i,n.cacheStatus,o),{response:i",
        "i=this.updateHeaders(i,n.cacheStatus,o),{response:i",
    ),
)


class PeerUnavailable(RuntimeError):
    """The peer cannot be installed or started here (no node/npm, no registry, ...)."""


def installed() -> bool:
    """Whether the patched gateway is already in place (no network needed)."""
    return ENTRY.exists() and MARKER in ENTRY.read_text(errors="replace")


def ensure_installed(timeout: float = 300.0) -> Path:
    """Install `@portkey-ai/gateway@VERSION` with npm if needed, patch it, return its entry."""
    if installed():
        return ENTRY
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise PeerUnavailable("node and npm are needed for the Portkey peer")
    INSTALL_DIR.mkdir(parents=True, exist_ok=True)
    (PEER_DIR / ".gitignore").write_text(
        "# installed by the benchmark set-up; never committed\n*\n"
    )
    if not ENTRY.exists():
        try:
            done = subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(INSTALL_DIR),
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    f"{PACKAGE}@{VERSION}",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise PeerUnavailable(f"npm install timed out after {timeout} s") from error
        if done.returncode != 0 or not ENTRY.exists():
            raise PeerUnavailable(f"npm install failed: {done.stderr.strip()[-500:]}")
    patch(ENTRY)
    return ENTRY


def patch(entry: Path) -> None:
    """Apply the mutable-headers fix to the built gateway (idempotent)."""
    source = entry.read_text()
    if MARKER in source:
        return
    for old, new in _PATCHES:
        if source.count(old) != 1:
            raise PeerUnavailable(f"Portkey build changed; cannot find {old!r} exactly once")
        source = source.replace(old, new)
    entry.write_text(f"{source.rstrip()}\n{MARKER}\n")  # after the shebang line


def command(port: int) -> list[str]:
    """The argv that starts the installed gateway on 127.0.0.1:`port`."""
    return ["node", str(ENTRY), "--headless", f"--port={port}"]


def request_headers(upstream_v1: str) -> dict[str, str]:
    """Headers that route a `/v1/chat/completions` call through Portkey to `upstream_v1`."""
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": upstream_v1,
        "Authorization": "Bearer sk-bench",
    }


def main() -> None:
    """Install and patch, then print how to start it."""
    entry = ensure_installed()
    print(f"Portkey {VERSION} ready: {' '.join(command(8787))}  ({entry})")


if __name__ == "__main__":
    main()
