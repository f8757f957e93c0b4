"""One admission suite for both ways limits are counted: in this process
(`LocalLimits`) and across instances on a real Redis (`state.limits.RedisLimits`),
through what the server calls (`Client.admit_socket`, `Client.admit_request`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from config.models import AuthConfig, LimitsConfig, RedisStateConfig
from security.access import Client
from security.keys import hash_key
from security.limits import ANONYMOUS, LimitPolicy, LimitStore, LocalLimits, SocketCap
from state.limits import RedisLimits
from state.link import RedisLink
from tests.redis_server import RedisServer

MakeStore = Callable[[LimitPolicy], Awaitable[LimitStore]]


def policy(max_sockets: int = 5, per_key: int | None = 3, rate: str | None = None) -> LimitPolicy:
    auth = AuthConfig.model_validate(
        {
            "keys": [
                {"id": "a", "hash": hash_key("key-a")},
                {"id": "b", "hash": hash_key("key-b"), "max_sockets": 1, "rate_limit": "1/m"},
            ]
        }
    )
    limits = LimitsConfig.model_validate(
        {"max_sockets": max_sockets, "max_sockets_per_key": per_key, "rate_limit": rate}
    )
    return LimitPolicy.build(auth, limits)


@pytest.fixture(params=["local", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """A store factory of each kind (the Redis one on a redis-server of its own)."""
    if request.param == "local":

        async def local(p: LimitPolicy) -> LimitStore:
            return LocalLimits(p)

        yield local
        return
    server = RedisServer()
    server.start()
    links: list[RedisLink] = []

    async def on_redis(p: LimitPolicy) -> LimitStore:
        link = RedisLink(RedisStateConfig(url=server.url))
        await link.start()
        links.append(link)
        return RedisLimits(link, LocalLimits(p))

    try:
        yield on_redis
    finally:
        for link in links:
            await link.aclose()
        server.stop()


def client(store: LimitStore, key_id: str) -> Client:
    return Client(key_id, None, store)


async def test_socket_caps_per_key_and_server(make_store: MakeStore) -> None:
    store = await make_store(policy(max_sockets=5, per_key=3))
    a, b = client(store, "a"), client(store, "b")
    assert [await a.admit_socket() for _ in range(4)] == [None, None, None, SocketCap.KEY]
    assert await b.admit_socket() is None
    assert await b.admit_socket() is SocketCap.KEY
    assert await client(store, ANONYMOUS).admit_socket() is None
    assert await client(store, "unknown-id").admit_socket() is SocketCap.SERVER
    a.close_socket()
    assert await client(store, "unknown-id").admit_socket() is None  # counted as anonymous
    assert await client(store, ANONYMOUS).admit_socket() is SocketCap.SERVER


async def test_request_rate_per_key(make_store: MakeStore) -> None:
    store = await make_store(policy(rate="2/m"))
    a, b = client(store, "a"), client(store, "b")
    assert await a.admit_request(1_000_000.0) is None
    assert await a.admit_request(1_000_000.0) is None
    wait = await a.admit_request(1_000_000.0)
    assert wait is not None and 0 < wait <= 30.0  # one token per 30 s
    assert await client(store, ANONYMOUS).admit_request(1_000_000.0) is None  # its own
    assert await b.admit_request(1_000_000.0) is None  # b's own 1/m
    assert await b.admit_request(1_000_000.0) is not None


async def test_no_rate_limit_admits_everything(make_store: MakeStore) -> None:
    store = await make_store(policy(rate=None))
    a = client(store, "a")
    assert [await a.admit_request(0.0) for _ in range(50)] == [None] * 50
