"""Rolling restart behind a real load balancer: HAProxy (Debian's `haproxy`) on loopback.

Two `sluice serve` processes sit behind HAProxy, which health-checks `/v1/ready`
and proxies websocket upgrades. The Python client streams chat answers
continuously (two clients, 10 concurrent loops) while instance A is drained (SIGTERM),
restarted and seen healthy again, then B. Every request must end exactly once,
completed: zero lost. A second test measures the drain of one instance with 100
streams in flight through the client.

HAProxy is a system package: CI installs it (`apt-get install -y haproxy`). When
the binary is missing the tests fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import shutil
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from sluice_client import Backoff, ClientOptions, SluiceClient, SluiceError

from fakes.openai_server import FakeOpenAI, run_fake_openai

ROOT = Path(__file__).resolve().parent.parent
ANSWER = ["tok "] * 10
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=2)


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open until each is known)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if found is None:
        pytest.fail(
            "haproxy is not installed; this test needs Debian's package: apt-get install -y haproxy"
        )
    return found


HAPROXY_CONFIG = """
global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    timeout client-fin 1s
    timeout server-fin 1s
    timeout http-request 5s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503

frontend sluice_in
    bind 127.0.0.1:{port}
    default_backend sluice

backend sluice
    balance leastconn
    option httpchk GET /v1/ready
    http-check expect status 200
    default-server inter 100ms fastinter 100ms downinter 100ms fall 1 rise 2
{servers}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


@dataclass
class Instance:
    """One `sluice serve` process on a fixed loopback port (restartable on the same port)."""

    name: str
    port: int
    config: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "server.py"),
            "serve",
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            for _ in range(200):
                if self.proc.returncode is not None:
                    break
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/v1/ready") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientConnectionError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        pytest.fail(f"sluice instance {self.name} did not become ready")

    async def drain(self, within: float) -> float:
        """SIGTERM, wait for exit 0; the seconds it took."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), within)
        assert code == 0, f"instance {self.name} exited with {code}"
        return loop.time() - started

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def write_config(path: Path, fake: FakeOpenAI, grace: str) -> Path:
    path.write_text(
        f"""
server:
  drain_grace: {grace}
  heartbeat: 5s
  log_level: warning
routers:
  language:
    - id: r
      models:
        - id: a
          openai:
            base_url: {fake.url}
            api_key: sk-rolling-test
"""
    )
    return path


@dataclass
class Balancer:
    """A running HAProxy in front of the instances."""

    proc: asyncio.subprocess.Process
    url: str
    stats_url: str
    log: Path

    async def server_status(self) -> dict[str, str]:
        async with (
            aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
            http.get(self.stats_url + ";csv") as resp,
        ):
            text = await resp.text()
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "sluice" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def sessions(self) -> dict[str, int]:
        async with (
            aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
            http.get(self.stats_url + ";csv") as resp,
        ):
            text = await resp.text()
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: int(row["stot"] or 0)
            for row in rows
            if row["pxname"] == "sluice" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def wait_status(self, name: str, status: str, within: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (await self.server_status()).get(name) != status:
            if loop.time() > deadline:
                pytest.fail(f"haproxy never saw {name} {status}: {await self.server_status()}")
            await asyncio.sleep(0.05)


async def start_balancer(
    tmp_path: Path, instances: list[Instance], port: int, stats_port: int
) -> Balancer:
    binary = haproxy_binary()
    servers = "\n".join(f"    server {i.name} 127.0.0.1:{i.port} check" for i in instances)
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, stats_port=stats_port, servers=servers))
    check = await asyncio.create_subprocess_exec(
        binary, "-c", "-q", "-f", str(config), stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(check.communicate(), 10)
    assert check.returncode == 0, f"haproxy rejected its config: {err.decode()}"
    log = tmp_path / "haproxy.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            binary, "-db", "-f", str(config), stdout=sink, stderr=sink
        )
    balancer = Balancer(
        proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}/stats", log
    )
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        for _ in range(100):
            try:
                async with http.get(balancer.stats_url) as resp:
                    if resp.status == 200:
                        break
            except (aiohttp.ClientConnectionError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
    for instance in instances:
        await balancer.wait_status(instance.name, "UP")
    return balancer


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        fake.script.chunks = list(ANSWER)
        yield fake


@dataclass
class Traffic:
    """Outcome of every request the client loops sent, by request_id."""

    outcomes: dict[str, str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)

    def record(self, request_id: str, outcome: str) -> None:
        if request_id in self.outcomes:
            self.duplicates.append(request_id)
        self.outcomes[request_id] = outcome


async def stream_until(
    client: SluiceClient, loop_id: int, stop: asyncio.Event, traffic: Traffic
) -> None:
    """One client loop: chat streams back to back until `stop`; each outcome recorded."""
    n = 0
    expected = "".join(ANSWER)
    while not stop.is_set():
        request_id = f"loop{loop_id}-{n}"
        n += 1
        text = ""
        try:
            async for event in client.chat_stream("r", "hi", request_id=request_id):
                text += event.content
        except SluiceError as error:
            traffic.record(request_id, f"{type(error).__name__}: {error.message}")
            continue
        traffic.record(request_id, "completed" if text == expected else f"wrong text {text!r}")


async def test_rolling_restart_behind_haproxy_loses_no_request(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    upstream.script.delay = 0.02  # a stream takes about 0.25 s
    config = write_config(tmp_path / "sluice.yaml", upstream, grace="10s")
    port_a, port_b, port_lb, port_stats = free_ports(4)
    instances = [Instance("a", port_a, config), Instance("b", port_b, config)]
    balancer: Balancer | None = None
    try:
        for instance in instances:
            await instance.start()
        balancer = await start_balancer(tmp_path, instances, port_lb, port_stats)
        options = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.5), heartbeat=5.0)
        traffic = Traffic()
        stop = asyncio.Event()
        drains: dict[str, float] = {}
        async with (
            SluiceClient(balancer.url, options=options) as first,
            SluiceClient(balancer.url, options=options) as second,
        ):
            clients = [first, second]
            loops = [
                asyncio.create_task(stream_until(clients[i % 2], i, stop, traffic))
                for i in range(10)
            ]
            await asyncio.sleep(1.0)
            for instance in instances:
                drains[instance.name] = await instance.drain(within=15)
                await instance.start()
                await balancer.wait_status(instance.name, "UP")
                await asyncio.sleep(1.0)  # traffic reaches the restarted instance
            stop.set()
            await asyncio.wait_for(asyncio.gather(*loops), 15)
            stats = [c.stats for c in clients]
        sessions = await balancer.sessions()
    finally:
        if balancer is not None and balancer.proc.returncode is None:
            balancer.proc.terminate()
            await balancer.proc.wait()
        for instance in instances:
            await instance.kill()

    outcomes = Counter(traffic.outcomes.values())
    print(
        f"\nrolling restart: {len(traffic.outcomes)} requests, outcomes {dict(outcomes)}, "
        f"drain seconds {drains}, client {stats}, haproxy sessions {sessions}"
    )
    assert not traffic.duplicates, "a request ended twice"
    assert outcomes["completed"] == len(traffic.outcomes), f"requests lost: {outcomes}"
    assert len(traffic.outcomes) >= 100
    assert all(s.lost == 0 and s.failed == 0 for s in stats)
    assert all(s.connects >= 2 for s in stats), "a client never moved to another instance"
    assert all(seconds < 5 for seconds in drains.values())
    assert all(count > 0 for count in sessions.values())


async def test_drain_time_with_100_streams_in_flight(tmp_path: Path, upstream: FakeOpenAI) -> None:
    upstream.script.chunks = ["tok "] * 20
    upstream.script.delay = 0.05  # each stream takes about 1 s
    config = write_config(tmp_path / "sluice.yaml", upstream, grace="20s")
    instance = Instance("solo", free_ports(1)[0], config)
    try:
        await instance.start()
        options = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.5), pending_timeout=2.0)
        async with SluiceClient(f"http://127.0.0.1:{instance.port}", options=options) as client:

            async def one(i: int) -> str:
                return await client.chat_text("r", "hi", request_id=f"s{i}")

            streams = [asyncio.create_task(one(i)) for i in range(100)]
            await upstream.stats.wait_until(lambda: upstream.stats.open_streams == 100, 10)
            drain_seconds = await instance.drain(within=20)
            texts = await asyncio.wait_for(asyncio.gather(*streams), 5)
            stats = client.stats
    finally:
        await instance.kill()
    print(f"\ndrain with 100 streams in flight: {drain_seconds:.2f} s (streams ~1 s long)")
    assert texts == ["tok " * 20] * 100
    assert stats.lost == 0 and stats.completed == 100 and stats.connects == 1
    assert drain_seconds < 5.0  # the streams' last second plus shutdown; grace is 20 s
