"""Three `sluice serve` processes behind HAProxy sharing one real `redis-server`.

A key capped at 10 websockets opens 10 through the balancer (they spread over the
instances); an 11th is refused on every instance it can reach. A 429 the upstream
gives one instance cools the model on the other two. An instance killed with
SIGKILL stops holding its sockets against the key once `instance_ttl` passes.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fakes.openai_server import FakeOpenAI, run_fake_openai
from security.keys import hash_key
from tests.redis_server import RedisServer
from tests.test_rolling_restart import ROOT, Instance, free_ports, start_balancer

KEY = "sluice-process-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def write_config(path: Path, fake: FakeOpenAI, redis_url: str) -> Path:
    path.write_text(
        f"""
server:
  log_level: warning
  heartbeat: 5s
auth:
  keys:
    - id: apps
      hash: "{hash_key(KEY)}"
limits:
  max_sockets_per_key: 10
state:
  redis:
    url: {redis_url}
    reconnect_interval: 100ms
    instance_ttl: 1s
routers:
  language:
    - id: r
      retry: {{max_retries: 0}}
      models:
        - id: a
          openai:
            base_url: {fake.url}
            api_key: sk-shared-test
"""
    )
    return path


class Process(Instance):
    """`Instance` with a start-up bound for a busy machine (three start at once)."""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "server.py"),
            "serve",
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            "--workers",
            "1",  # one process: SIGKILL kills the very process that holds sockets
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 50
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while self.proc.returncode is None and loop.time() < deadline:
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/v1/ready") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientConnectionError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        pytest.fail(f"sluice instance {self.name} did not become ready")


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        yield fake


@pytest.fixture
async def instances(
    tmp_path: Path, upstream: FakeOpenAI, redis_server: RedisServer
) -> AsyncIterator[list[Instance]]:
    config = write_config(tmp_path / "sluice.yaml", upstream, redis_server.url)
    ports = free_ports(3)
    started: list[Instance] = [Process(f"s{i}", port, config) for i, port in enumerate(ports)]
    try:
        await asyncio.gather(*(i.start() for i in started))
        yield started
    finally:
        for instance in started:
            await instance.kill()


async def upgrade(http: aiohttp.ClientSession, port: int) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(
        f"http://127.0.0.1:{port}/v1/language/r/chatStream", headers=HEADERS
    )


async def refused_everywhere(http: aiohttp.ClientSession, instances: list[Instance]) -> bool:
    """Whether an upgrade of the key is refused (429) by every instance."""
    for instance in instances:
        try:
            ws = await upgrade(http, instance.port)
        except aiohttp.WSServerHandshakeError as error:
            assert error.status == 429
            continue
        await ws.close()
        return False
    return True


async def test_the_11th_socket_is_refused_whichever_instance_it_reaches(
    tmp_path: Path, instances: list[Instance]
) -> None:
    port, stats_port = free_ports(2)
    balancer = await start_balancer(tmp_path, instances, port, stats_port)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(10):
                sockets.append(await upgrade(http, port))
            spread = await balancer.sessions()
            assert sum(1 for n in spread.values() if n > 0) >= 2, spread
            with pytest.raises(aiohttp.WSServerHandshakeError) as through_balancer:
                await upgrade(http, port)
            assert through_balancer.value.status == 429
            assert await refused_everywhere(http, instances)

            # kill -9 an instance holding some of them: once it has not been heard
            # of for instance_ttl, its sockets stop counting and upgrades succeed
            holder = instances[0]
            assert holder.proc is not None
            holder.proc.send_signal(signal.SIGKILL)
            await holder.proc.wait()
            others = instances[1:]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            waited = 0
            while await refused_everywhere(http, others):
                assert loop.time() < deadline, "a killed instance's sockets kept counting"
                waited += 1
                await asyncio.sleep(0.1)
            assert waited > 0  # refused at first: the killed instance's sockets counted
            for ws in sockets:
                await ws.close()
    finally:
        balancer.proc.terminate()
        await balancer.proc.wait()


async def model_health(http: aiohttp.ClientSession, port: int, model: str) -> Any:
    async with http.get(f"http://127.0.0.1:{port}/v1/language/", headers=HEADERS) as response:
        listing = await response.json()
    (router,) = listing["routers"]
    return next(m["health"] for m in router["models"] if m["id"] == model)


async def test_a_429_seen_by_one_process_cools_the_model_in_the_others(
    upstream: FakeOpenAI, instances: list[Instance]
) -> None:
    upstream.script.fault = "http_429"
    upstream.script.retry_after = "60"
    async with aiohttp.ClientSession() as http:
        first = instances[0].port
        async with http.post(
            f"http://127.0.0.1:{first}/v1/language/r/chat",
            json={"message": {"role": "user", "content": "hi"}},
            headers=HEADERS,
        ) as response:
            assert response.status == 503  # its only model answered 429
        upstream.script.fault = "none"
        calls = upstream.stats.requests
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        for instance in instances[1:]:
            while await model_health(http, instance.port, "a") != "unhealthy":
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
            async with http.post(
                f"http://127.0.0.1:{instance.port}/v1/language/r/chat",
                json={"message": {"role": "user", "content": "hi"}},
                headers=HEADERS,
            ) as response:
                assert response.status == 503  # cooling everywhere: nothing is tried
        assert upstream.stats.requests == calls
