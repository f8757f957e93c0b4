"""Raw-socket HTTP/1.1 and websocket helpers for tests that act like an attacker.

- `served(config, provider)`: Sluice started the way `sluice serve` starts it
  (AppRunner, the connection guard, a TCP site on 127.0.0.1), in this process.
- `exchange(port, raw)`: send raw bytes, read one HTTP response.
- `upgrade(host, path, ...)`: a websocket handshake request with chosen headers;
  `ws_frame(opcode, payload)` a masked client frame; `read_frame` a server frame.
- `server_fds()` / `rss_bytes()`: this process's open descriptors and resident memory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from config.models import SluiceConfig
from server import build_app
from tests.ops_helpers import Samples, ScriptedProvider, scripted_factory
from transport.http_guard import guard_connections


@dataclass
class Served:
    """A running Sluice: its app, port and chat provider."""

    app: web.Application
    port: int
    provider: ScriptedProvider

    @property
    def host(self) -> str:
        """The Host header a local client sends."""
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def served(
    config: SluiceConfig, provider: ScriptedProvider | None = None
) -> AsyncIterator[Served]:
    """Serve `config` on 127.0.0.1 (a free port) as `server.serve` does, until the block ends."""
    provider = provider or ScriptedProvider(chunks=["ok"])
    app = build_app(config, provider_factory=scripted_factory(provider))
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2)
    await runner.setup()
    guard_connections(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield Served(app, port, provider)
    finally:
        await runner.cleanup()


@dataclass
class Response:
    """One HTTP response as read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        body += await reader.readexactly(size + 2)
        if size == 0:
            return body[:-2]
        body = body[:-2]


async def read_response(
    reader: asyncio.StreamReader, within: float = 10, *, to_head: bool = False
) -> Response:
    """The next HTTP response on `reader`: its body by Content-Length, chunks or EOF
    (none for the answer to a HEAD request)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if to_head:
        body = b""
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await asyncio.wait_for(_chunked(reader), within)
    elif "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), within)
    elif status in (101, 204, 304):
        body = b""
    else:
        body = await asyncio.wait_for(reader.read(), within)
    return Response(status, headers, body)


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to 127.0.0.1:`port`."""
    return await asyncio.open_connection("127.0.0.1", port)


async def close_raw(writer: asyncio.StreamWriter) -> None:
    """Close a raw connection, whatever state the peer left it in."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def exchange(port: int, raw: bytes, within: float = 10) -> Response:
    """Send `raw` on a new connection, read one response, close."""
    reader, writer = await open_raw(port)
    try:
        writer.write(raw)
        await writer.drain()
        return await read_response(reader, within, to_head=raw.startswith(b"HEAD "))
    finally:
        await close_raw(writer)


async def eof_within(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes (fails if it does not within `within`)."""
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - loop.time()))
        except ConnectionError:  # reset, or our own write after the server closed
            return data
        if not chunk:
            return data
        data += chunk


def request(method: str, path: str, host: str | None, *headers: str, body: bytes = b"") -> bytes:
    """A raw HTTP/1.1 request (`Host` omitted when `host` is None)."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += list(headers)
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def upgrade(path: str, host: str | None, *headers: str) -> bytes:
    """A websocket handshake request for `path`."""
    key = base64.b64encode(os.urandom(16)).decode()
    return request(
        "GET",
        path,
        host,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *headers,
    )


TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, final client frame."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x80 | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader, within: float = 10) -> tuple[int, bytes]:
    """The next (opcode, payload) the server sends (server frames are not masked)."""
    first, second = await asyncio.wait_for(reader.readexactly(2), within)
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await asyncio.wait_for(reader.readexactly(size), within)


def server_fds() -> int:
    """Open file descriptors of this process (the in-process server's included)."""
    return len(os.listdir("/proc/self/fd"))


def rss_bytes(pid: str = "self") -> int:
    """Resident memory of a process (Linux)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def metrics_of(port: int) -> Samples:
    """GET /metrics over a raw connection, parsed: sample name -> [(labels, value)]."""
    resp = await exchange(port, request("GET", "/metrics", f"127.0.0.1:{port}"))
    assert resp.status == 200, resp
    out: Samples = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def json_body(resp: Response) -> Any:
    """The response body parsed as JSON."""
    return json.loads(resp.body)
