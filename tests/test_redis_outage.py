"""Redis stopped and restarted under load: no request fails, `/v1/ready` stays 200
and says Redis is down then up, and so does `sluice_state_store_up`.

Two Sluice instances share one real `redis-server`; a client key with a socket cap
and a request rate makes every socket and request go through Redis while it is
up. Clients keep opening sockets and streaming (and calling the HTTP chat) on both
instances while Redis goes away and comes back empty."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from config.models import RedisStateConfig, StateConfig
from fakes.openai_server import FakeOpenAI
from security.keys import hash_key
from tests.conftest import MakeClient, collect, make_config, openai_model
from tests.ops_helpers import with_sections
from tests.redis_server import RedisServer

KEY = "sluice-outage-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}


async def redis_up(client: TestClient[Any, Any]) -> bool:
    response = await client.get("/v1/ready")
    assert response.status == 200  # Redis down never makes an instance unready
    body = await response.json()
    up: bool = body["state"]["up"]
    return up


async def gauge(client: TestClient[Any, Any]) -> str:
    text = await (await client.get("/metrics", headers=HEADERS)).text()
    (line,) = [x for x in text.splitlines() if x.startswith("sluice_state_store_up{")]
    return line


class Load:
    """Clients streaming on both instances until stopped; counts what ended how."""

    def __init__(self, instances: list[TestClient[Any, Any]]) -> None:
        self.instances = instances
        self.completed = 0
        self.failures: list[str] = []
        self.stop = asyncio.Event()
        self.progress = asyncio.Condition()

    async def websocket_client(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            client = self.instances[(n + i) % len(self.instances)]
            async with client.ws_connect("/v1/language/r/chatStream", headers=HEADERS) as ws:
                for j in range(3):
                    rid = f"c{n}-{i}-{j}"
                    await ws.send_json({"request_id": rid, "message": {"content": "hi"}})
                    frames = (await collect(ws, 1))[rid]
                    last = frames[-1]
                    if last.get("chunk", {}).get("finish_reason") != "complete":
                        self.failures.append(str(last))
                    await self.ended()
            i += 1

    async def http_client(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            client = self.instances[(n + i) % len(self.instances)]
            response = await client.post(
                "/v1/language/r/chat",
                json={"message": {"role": "user", "content": "hi"}},
                headers=HEADERS,
            )
            if response.status != 200:
                self.failures.append(f"HTTP {response.status}: {await response.text()}")
            await self.ended()
            i += 1

    async def ended(self) -> None:
        async with self.progress:
            self.completed += 1
            self.progress.notify_all()

    async def more(self, count: int) -> None:
        """Wait until `count` more requests have ended."""
        async with self.progress:
            target = self.completed + count
            await asyncio.wait_for(
                self.progress.wait_for(lambda: self.completed >= target), timeout=30
            )


async def test_redis_stopped_and_restarted_under_load_fails_no_request(
    sluice: MakeClient, fake_a: FakeOpenAI, redis_server: RedisServer
) -> None:
    fake_a.script.chunks = ["one", " two", " three", " four"]
    fake_a.script.delay = 0.005
    config = with_sections(
        make_config(openai_model("a", fake_a)),
        auth={"keys": [{"id": "k", "hash": hash_key(KEY)}]},
        limits={"max_sockets_per_key": 50, "rate_limit": "100000/s"},
    )
    redis = RedisStateConfig.model_validate(
        {"url": redis_server.url, "reconnect_interval": "100ms", "command_timeout": "250ms"}
    )
    config = config.model_copy(update={"state": StateConfig(redis=redis)})
    instances = [await sluice(config), await sluice(config)]
    assert all([await redis_up(c) for c in instances])

    load = Load(instances)
    clients = [asyncio.create_task(load.websocket_client(n)) for n in range(6)]
    clients += [asyncio.create_task(load.http_client(n)) for n in range(2)]
    try:
        await load.more(30)
        redis_server.stop()
        for client in instances:
            while await redis_up(client):
                await load.more(1)
            assert await gauge(client) == 'sluice_state_store_up{store="redis"} 0.0'
        await load.more(60)  # served on local state meanwhile
        redis_server.start()
        for client in instances:
            while not await redis_up(client):
                await load.more(1)
            assert await gauge(client) == 'sluice_state_store_up{store="redis"} 1.0'
        await load.more(60)
    finally:
        load.stop.set()
        results = await asyncio.gather(*clients, return_exceptions=True)
    assert [r for r in results if r is not None] == []
    assert load.failures == []
    assert load.completed >= 150
