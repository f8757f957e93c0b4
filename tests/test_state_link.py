"""The `state.redis` link seen from outside: `/v1/ready` and `/metrics` say whether
Redis answers, a Redis that goes away is logged once and reconnected, and no request
depends on it. A real `redis-server` on loopback (tests/redis_server.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config import ConfigError
from config.loader import parse_config
from config.models import RedisStateConfig, SluiceConfig, StateConfig
from protocol.schema import ReadyResponse
from state.link import safe_url
from tests.conftest import MakeClient, make_config, openai_model
from tests.redis_server import RedisServer


def redis_config(url: str, base: SluiceConfig | None = None) -> SluiceConfig:
    """`base` (default: the embedded-free minimal config) with `state.redis` at `url`."""
    redis = RedisStateConfig.model_validate(
        {"url": url, "reconnect_interval": "100ms", "command_timeout": "250ms"}
    )
    return (base or SluiceConfig()).model_copy(update={"state": StateConfig(redis=redis)})


async def ready_state(client: TestClient[Any, Any]) -> dict[str, Any]:
    """`GET /v1/ready` must stay 200; its body's `state` object out."""
    response = await client.get("/v1/ready")
    assert response.status == 200
    body = await response.json()
    ReadyResponse.model_validate(body)  # the OpenAPI document's schema
    assert body["ready"] is True
    state: dict[str, Any] = body["state"]
    return state


async def gauge(client: TestClient[Any, Any]) -> str:
    """The `sluice_state_store_up` sample line of `/metrics`."""
    text = await (await client.get("/metrics")).text()
    lines = [line for line in text.splitlines() if line.startswith("sluice_state_store_up{")]
    assert len(lines) == 1, text
    return lines[0]


async def until(check: Callable[[], Any], within: float = 10.0) -> None:
    """Poll the async `check()` until it returns True (fails after `within` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def test_redis_url_must_name_a_redis_scheme() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("state:\n  redis:\n    url: http://redis:6379\n", source="sluice.yaml")
    assert "state.redis.url" in str(caught.value)
    config = parse_config(
        "state:\n  redis:\n    url: redis://redis:6379/0\n    key_prefix: 'prod:'\n",
        source="x.yaml",
    )
    assert config.state.redis is not None and config.state.redis.key_prefix == "prod:"
    assert parse_config("{}\n", source="x.yaml").state.redis is None


def test_logged_url_hides_the_password() -> None:
    assert safe_url("redis://:hunter2@redis:6379/0") == "redis://:***@redis:6379/0"
    assert safe_url("redis://app:hunter2@redis/1") == "redis://app:***@redis/1"
    assert safe_url("redis://redis:6379/0") == "redis://redis:6379/0"


async def test_ready_and_metrics_follow_redis_down_and_up(
    sluice: MakeClient,
    redis_server: RedisServer,
    fake_a: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = redis_config(redis_server.url, make_config(openai_model("a", fake_a)))
    client = await sluice(config)
    state = await ready_state(client)
    assert state == {"store": "redis", "up": True}  # no URL: the logs name it
    assert await gauge(client) == 'sluice_state_store_up{store="redis"} 1.0'

    caplog.set_level(logging.WARNING, logger="sluice.state")
    redis_server.stop()

    async def down() -> bool:
        return (await ready_state(client))["up"] is False

    await until(down)
    assert await gauge(client) == 'sluice_state_store_up{store="redis"} 0.0'
    # requests go on while Redis is down
    answer = await client.post(
        "/v1/language/r/chat", json={"message": {"role": "user", "content": "hi"}}
    )
    assert answer.status == 200
    await asyncio.sleep(0.5)  # several reconnect attempts fail meanwhile
    downs = [r for r in caplog.records if r.getMessage().startswith("state store down")]
    assert len(downs) == 1
    assert downs[0].__dict__["url"] == redis_server.url

    redis_server.start()

    async def up() -> bool:
        return (await ready_state(client))["up"] is True

    await until(up)
    assert await gauge(client) == 'sluice_state_store_up{store="redis"} 1.0'
    ups = [r for r in caplog.records if r.getMessage() == "state store up"]
    assert len(ups) == 1


async def test_starting_with_redis_down_serves_and_connects_later(
    sluice: MakeClient, fake_a: Any
) -> None:
    server = RedisServer()
    config = redis_config(server.url, make_config(openai_model("a", fake_a)))
    client = await sluice(config)
    assert (await ready_state(client))["up"] is False
    answer = await client.post(
        "/v1/language/r/chat", json={"message": {"role": "user", "content": "hi"}}
    )
    assert answer.status == 200
    server.start()
    try:

        async def up() -> bool:
            return (await ready_state(client))["up"] is True

        await until(up)
    finally:
        server.stop()


async def test_ready_without_redis_is_unchanged(sluice: MakeClient, fake_a: Any) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    response = await client.get("/v1/ready")
    assert await response.json() == {"ready": True}
