"""Per-key socket caps and request rates counted across instances on a real Redis.

Store level: `RedisLimits` of several "instances" (each its own link and local
store) on one `redis-server`. End to end: three Sluice apps on loopback sharing
that Redis, a client with one key going to whichever instance; the 11th socket of
a key capped at 10 is refused wherever it lands, and so is the request past the
key's rate. Redis down: each instance counts on its own, and puts its counts back
when Redis returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.models import AuthConfig, LimitsConfig, RedisStateConfig, SluiceConfig, StateConfig
from fakes.openai_server import FakeOpenAI
from security.keys import hash_key
from security.limits import ANONYMOUS, LimitPolicy, LocalLimits, SocketCap
from server import SHARED_LIMITS
from state.limits import RedisLimits
from state.link import RedisLink
from tests.conftest import MakeClient, collect, make_config, openai_model
from tests.ops_helpers import with_sections
from tests.redis_server import RedisServer

KEY = "sluice-shared-key-0123456789"


def redis_state(url: str, **extra: Any) -> RedisStateConfig:
    return RedisStateConfig.model_validate(
        {"url": url, "reconnect_interval": "100ms", "command_timeout": "500ms", **extra}
    )


def policy(per_key: int | None = 3, rate: str | None = None) -> LimitPolicy:
    auth = AuthConfig.model_validate({"keys": [{"id": "k", "hash": hash_key(KEY)}]})
    limits = LimitsConfig.model_validate(
        {"max_sockets": 100, "max_sockets_per_key": per_key, "rate_limit": rate}
    )
    return LimitPolicy.build(auth, limits)


@pytest.fixture
async def links(redis_server: RedisServer) -> AsyncIterator[list[RedisLink]]:
    """Three links to the test's Redis, as three instances would hold."""
    made = [RedisLink(redis_state(redis_server.url)) for _ in range(3)]
    for link in made:
        await link.start()
    yield made
    for link in made:
        await link.aclose()


def stores(links: list[RedisLink], p: LimitPolicy) -> list[RedisLimits]:
    return [RedisLimits(link, LocalLimits(p)) for link in links]


async def until(check: Callable[[], Any], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_a_keys_socket_cap_counts_every_instance(links: list[RedisLink]) -> None:
    a, b, c = stores(links, policy(per_key=3))
    assert await a.admit_socket("k") is None
    assert await b.admit_socket("k") is None
    assert await c.admit_socket("k") is None
    for store in (a, b, c):
        assert await store.admit_socket("k") is SocketCap.KEY
    # anonymous has its own count
    assert await a.admit_socket(ANONYMOUS) is None
    b.release_socket("k")
    await asyncio.gather(*b._tasks)
    assert await c.admit_socket("k") is None
    assert await a.admit_socket("k") is SocketCap.KEY


async def test_a_request_rate_counts_every_instance(links: list[RedisLink]) -> None:
    a, b, c = stores(links, policy(rate="3/m"))
    answers = [await store.admit_request("k", 0.0) for store in (a, b, c)]
    assert answers == [None, None, None]
    for store in (a, b, c):
        wait = await store.admit_request("k", 0.0)
        assert wait is not None and 0 < wait <= 20.0  # one token per 20 s
    # a refund (the request was refused for another reason) gives the token back
    a.refund_request("k")
    await asyncio.gather(*a._tasks)
    assert await c.admit_request("k", 0.0) is None
    assert await b.admit_request("k", 0.0) is not None


async def test_a_vanished_instances_sockets_stop_counting(redis_server: RedisServer) -> None:
    short = redis_state(redis_server.url, instance_ttl="300ms")
    gone, stays = RedisLink(short), RedisLink(short)
    await gone.start()
    await stays.start()
    try:
        first, second = stores([gone, stays], policy(per_key=2))
        assert await first.admit_socket("k") is None
        assert await first.admit_socket("k") is None
        assert await second.admit_socket("k") is SocketCap.KEY
        await gone.aclose()  # crashed: no goodbye, no more heartbeats
        admitted: list[SocketCap | None] = []

        async def try_once() -> None:
            admitted.append(await second.admit_socket("k"))

        while not admitted or admitted[-1] is not None:
            await try_once()
            await asyncio.sleep(0.05)
        assert admitted[-1] is None
    finally:
        await stays.aclose()


async def test_redis_down_counts_locally_and_puts_counts_back(
    redis_server: RedisServer,
) -> None:
    link_a = RedisLink(redis_state(redis_server.url))
    link_b = RedisLink(redis_state(redis_server.url))
    await link_a.start()
    await link_b.start()
    try:
        a, b = stores([link_a, link_b], policy(per_key=2))
        assert await a.admit_socket("k") is None
        redis_server.stop()
        # the first command finds Redis gone: admitted on local counts
        assert await a.admit_socket("k") is None
        await until(lambda: not link_a.up and not link_b.up)
        assert await a.admit_socket("k") is SocketCap.KEY  # its local cap
        assert await b.admit_socket("k") is None  # b counts alone
        redis_server.start()  # empty: no counts survived
        await until(lambda: link_a.up and link_b.up)
        # both wrote their open sockets back (a: 2, b: 1): the key is over its cap
        assert await b.admit_socket("k") is SocketCap.KEY
        a.release_socket("k")
        a.release_socket("k")
        await asyncio.gather(*a._tasks)
        assert await b.admit_socket("k") is None
    finally:
        await link_a.aclose()
        await link_b.aclose()


# ---- end to end: three Sluice instances on one Redis --------------------------------


def instance_config(fake: FakeOpenAI, url: str, **limits: Any) -> SluiceConfig:
    config = with_sections(
        make_config(openai_model("a", fake)),
        auth={"keys": [{"id": "k", "hash": hash_key(KEY)}]},
        limits=limits,
    )
    return config.model_copy(update={"state": StateConfig(redis=redis_state(url))})


async def three(sluice: MakeClient, config: SluiceConfig) -> list[TestClient[Any, Any]]:
    return [await sluice(config) for _ in range(3)]


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


async def test_the_11th_socket_of_a_key_is_refused_on_any_instance(
    sluice: MakeClient, fake_a: FakeOpenAI, redis_server: RedisServer
) -> None:
    instances = await three(
        sluice, instance_config(fake_a, redis_server.url, max_sockets_per_key=10)
    )
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        for i in range(10):
            client = instances[i % 3]
            sockets.append(await client.ws_connect("/v1/language/r/chatStream", headers=bearer()))
        for client in instances:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect("/v1/language/r/chatStream", headers=bearer())
            assert refused.value.status == 429
        # a socket closes on instance 0: the next one may open on instance 2
        await sockets.pop(0).close()

        async def reopened() -> aiohttp.ClientWebSocketResponse | None:
            try:
                return await instances[2].ws_connect("/v1/language/r/chatStream", headers=bearer())
            except aiohttp.WSServerHandshakeError:
                return None

        socket = None
        for _ in range(100):
            socket = await reopened()
            if socket is not None:
                break
            await asyncio.sleep(0.05)
        assert socket is not None
        sockets.append(socket)
    finally:
        for ws in sockets:
            await ws.close()


async def test_a_keys_request_rate_holds_across_instances(
    sluice: MakeClient, fake_a: FakeOpenAI, redis_server: RedisServer
) -> None:
    instances = await three(sluice, instance_config(fake_a, redis_server.url, rate_limit="4/m"))
    sockets = [
        await client.ws_connect("/v1/language/r/chatStream", headers=bearer())
        for client in instances
    ]
    try:
        # 4 requests over the three instances' sockets: all admitted
        for i in range(4):
            await sockets[i % 3].send_json({"request_id": f"q{i}", "message": {"content": "hi"}})
            frames = await collect(sockets[i % 3], 1)
            assert frames[f"q{i}"][-1]["chunk"]["finish_reason"] == "complete"
        # the 5th is refused wherever it goes, over websocket and HTTP
        for i, ws in enumerate(sockets):
            await ws.send_json({"request_id": f"late{i}", "message": {"content": "hi"}})
            frames = await collect(ws, 1)
            error = frames[f"late{i}"][-1]["error"]
            assert error["name"] == "rate_limited"
        answer = await instances[1].post(
            "/v1/language/r/chat",
            json={"message": {"role": "user", "content": "hi"}},
            headers=bearer(),
        )
        assert answer.status == 429
    finally:
        for ws in sockets:
            await ws.close()


async def test_one_round_trip_per_admission_and_none_per_chunk(
    sluice: MakeClient, fake_a: FakeOpenAI, redis_server: RedisServer
) -> None:
    """Counted by Redis itself (INFO commandstats): a socket and a streamed request
    of a capped, rate-limited key cost one script call each, its close one HINCRBY,
    and the chunks nothing."""
    fake_a.script.chunks = [f"c{i} " for i in range(50)]
    config = instance_config(fake_a, redis_server.url, max_sockets_per_key=5, rate_limit="9/s")
    slow = config.state.redis.model_copy(update={"reconnect_interval": 30.0})  # type: ignore[union-attr]
    client = await sluice(config.model_copy(update={"state": StateConfig(redis=slow)}))
    probe = Redis.from_url(redis_server.url)
    try:
        for rid in ("warm-up", "q"):  # the first run loads the scripts (SCRIPT LOAD)
            await until(lambda: len(client.app[SHARED_LIMITS]._tasks) == 0)
            await probe.config_resetstat()
            async with client.ws_connect("/v1/language/r/chatStream", headers=bearer()) as ws:
                await ws.send_json({"request_id": rid, "message": {"content": "hi"}})
                frames = (await collect(ws, 1))[rid]
                assert len(frames) > 50
        await until(lambda: len(client.app[SHARED_LIMITS]._tasks) == 0)
        stats = await probe.info("commandstats")
    finally:
        await probe.aclose()
    calls = {
        name.removeprefix("cmdstat_"): value["calls"]
        for name, value in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info"))
    }
    # commandstats also counts the commands a script runs inside Redis
    assert calls.pop("evalsha") == 2  # the socket's and the request's admission
    assert calls.pop("hincrby") == 2  # one inside the socket script, one at its close
    assert set(calls) <= {"time", "hset", "hgetall", "hget", "hmget", "pexpire"}
    assert sum(calls.values()) <= 8  # the two scripts' own commands: nothing per chunk
