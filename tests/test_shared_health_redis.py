"""Provider health shared by instances on a real Redis: a 429, a 401 or an open
circuit seen by one Sluice instance cools (or disables) that model on the others,
which then never call it; an instance started, or routers rebuilt by a config
reload, later still know. Routing reads only local health: Redis is not asked on
the request path.

Both instances call the same fake upstream (the same provider block, as replicas
of one Deployment have); it answers 429 only while the first instance's request
is in flight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from config import load_config
from config.models import RedisStateConfig, SluiceConfig, StateConfig
from fakes.openai_server import FakeOpenAI
from fakes.tts_servers import FakeSpeechServer, run_fake_openai_speech
from server import build_app
from serving.reload import CONFIG_SOURCE, RELOADER, ConfigSource
from tests.conftest import FAST_RETRY, MakeClient, make_config, openai_model
from tests.redis_server import RedisServer
from tests.speak_helpers import FAST_CLIENT as SPEAK_CLIENT
from tests.speak_helpers import read_speak, speak, speak_config

PCM24 = {"encoding": "pcm_s16le", "sample_rate": 24000}


def redis_block(url: str) -> dict[str, Any]:
    return {"url": url, "reconnect_interval": "100ms", "command_timeout": "500ms"}


def shared_config(fake_a: FakeOpenAI, fake_b: FakeOpenAI, url: str) -> SluiceConfig:
    """Router r: model a (fake_a) first, b (fake_b) behind it; state on Redis."""
    config = make_config(openai_model("a", fake_a), openai_model("b", fake_b))
    redis = RedisStateConfig.model_validate(redis_block(url))
    return config.model_copy(update={"state": StateConfig(redis=redis)})


async def health_of(client: TestClient[Any, Any], model: str) -> str:
    listing = await (await client.get("/v1/language/")).json()
    (router,) = [r for r in listing["routers"] if r["id"] == "r"]
    (entry,) = [m for m in router["models"] if m["id"] == model]
    state: str = entry["health"]
    return state


async def until(check: Callable[[], Any], within: float = 10.0) -> None:
    """Poll the async `check()` until True (the sharing promise is "within a second";
    the bound here only keeps a broken build from hanging)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def chat(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.post(
        "/v1/language/r/chat", json={"message": {"role": "user", "content": "hi"}}
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_429_on_one_instance_cools_the_model_on_another(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis_server: RedisServer
) -> None:
    config = shared_config(fake_a, fake_b, redis_server.url)
    first, second = await sluice(config), await sluice(config)
    fake_a.script.fault = "http_429"
    fake_a.script.retry_after = "30"
    answer = await chat(first)  # a answers 429: failover to b
    assert answer["model_id"] == "b"
    fake_a.script.fault = "none"  # from now on a would answer anyone
    calls = fake_a.stats.requests

    async def cooled() -> bool:
        return await health_of(second, "a") == "unhealthy"

    await until(cooled)
    for _ in range(3):
        assert (await chat(second))["model_id"] == "b"
    assert fake_a.stats.requests == calls  # the second instance never tried a

    # an instance that starts now learns it from Redis
    third = await sluice(config)
    assert await health_of(third, "a") == "unhealthy"
    assert (await chat(third))["model_id"] == "b"
    assert fake_a.stats.requests == calls


async def test_a_401_disables_the_model_everywhere(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis_server: RedisServer
) -> None:
    config = shared_config(fake_a, fake_b, redis_server.url)
    first, second = await sluice(config), await sluice(config)
    fake_a.script.fault = "http_401"
    assert (await chat(first))["model_id"] == "b"

    async def disabled() -> bool:
        return await health_of(second, "a") == "disabled"

    await until(disabled)
    assert await health_of(first, "a") == "disabled"


async def test_an_open_circuit_is_shared(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis_server: RedisServer
) -> None:
    config = shared_config(fake_a, fake_b, redis_server.url)
    first, second = await sluice(config), await sluice(config)
    fake_a.script.fault = "http_500"
    while await health_of(first, "a") == "healthy":  # error budget: a few 500s open it
        assert (await chat(first))["model_id"] == "b"

    async def cooled() -> bool:
        return await health_of(second, "a") == "unhealthy"

    await until(cooled)


async def test_a_different_key_is_a_different_model(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis_server: RedisServer
) -> None:
    """A verdict applies only where the provider block (key included) is the same."""
    config = shared_config(fake_a, fake_b, redis_server.url)
    other_key = openai_model("a", fake_a)
    other_key["openai"]["api_key"] = "sk-another-account-5678"
    other = make_config(other_key, openai_model("b", fake_b)).model_copy(
        update={"state": config.state}
    )
    first, second = await sluice(config), await sluice(other)
    fake_a.script.fault = "http_429"
    fake_a.script.retry_after = "30"
    assert (await chat(first))["model_id"] == "b"
    third = await sluice(config)  # same key as first: knows
    assert await health_of(third, "a") == "unhealthy"
    assert await health_of(second, "a") == "healthy"


async def test_a_reload_does_not_resurrect_a_model_another_instance_saw_429(
    aiohttp_client: Any,
    sluice: MakeClient,
    fake_a: FakeOpenAI,
    fake_b: FakeOpenAI,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    def write(timeout: str) -> Path:
        models = [openai_model("a", fake_a), openai_model("b", fake_b)]
        router = {"id": "r", "retry": FAST_RETRY, "models": models, "deadline": timeout}
        data = {
            "routers": {"language": [router]},
            "state": {"redis": redis_block(redis_server.url)},
        }
        path = tmp_path / "sluice.json"
        path.write_text(json.dumps(data))
        return path

    path = write("30s")
    app = build_app(load_config(path))
    app[CONFIG_SOURCE] = ConfigSource(str(path), "127.0.0.1")
    reloading: TestClient[Any, Any] = await aiohttp_client(app)
    other = await sluice(load_config(path))

    fake_a.script.fault = "http_429"
    fake_a.script.retry_after = "30"
    assert (await chat(other))["model_id"] == "b"

    async def cooled() -> bool:
        return await health_of(reloading, "a") == "unhealthy"

    await until(cooled)
    write("31s")  # the router block changes: a reload builds it afresh
    outcome = reloading.app[RELOADER].reload()
    assert outcome.changed == ("r",)
    assert await health_of(reloading, "a") == "unhealthy"


async def speak_health(client: TestClient[Any, Any], model: str) -> str:
    listing = await (await client.get("/v1/speech/")).json()
    (router,) = listing["routers"]
    state: str = next(m["health"] for m in router["speak"]["models"] if m["id"] == model)
    return state


async def test_a_429_on_speak_cools_that_speech_model_on_another_instance(
    sluice: MakeClient, redis_server: RedisServer
) -> None:
    async with run_fake_openai_speech() as tts_a, run_fake_openai_speech() as tts_b:
        config = speak_config(tts_model("oa", tts_a), tts_model("ob", tts_b))
        redis = RedisStateConfig.model_validate(redis_block(redis_server.url))
        config = config.model_copy(update={"state": StateConfig(redis=redis)})
        first, second = await sluice(config), await sluice(config)
        tts_a.script.fault = "http_429"
        tts_a.script.retry_after = "30"
        async with first.ws_connect("/v1/speech/s/speak") as ws:
            await ws.send_str(speak("t1", "One sentence.", format=PCM24, final=True))
            result = (await read_speak(ws, 1))["t1"]
        assert [s["model_id"] for s in result.segments] == ["ob"]
        tts_a.script.fault = "none"
        calls = tts_a.stats.requests

        async def cooled() -> bool:
            return await speak_health(second, "oa") == "unhealthy"

        await until(cooled)
        async with second.ws_connect("/v1/speech/s/speak") as ws:
            await ws.send_str(speak("t2", "Another one.", format=PCM24, final=True))
            result = (await read_speak(ws, 1))["t2"]
        assert [s["model_id"] for s in result.segments] == ["ob"]
        assert tts_a.stats.requests == calls


def tts_model(model_id: str, fake: FakeSpeechServer) -> dict[str, Any]:
    return {
        "id": model_id,
        "client": SPEAK_CLIENT,
        "openai": {"base_url": fake.url, "model": "tts-fake", "api_key": "sk-tts-1234"},
    }


async def test_sharing_resumes_after_redis_restarts(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI, redis_server: RedisServer
) -> None:
    config = shared_config(fake_a, fake_b, redis_server.url)
    first, second = await sluice(config), await sluice(config)
    redis_server.stop()

    async def ready_up(client: TestClient[Any, Any], up: bool) -> bool:
        body = await (await client.get("/v1/ready")).json()
        return bool(body["state"]["up"] is up)

    for client in (first, second):
        await until(lambda c=client: ready_up(c, False))  # type: ignore[misc]
    # while Redis is away a 429 stays on the instance that saw it
    fake_a.script.fault = "http_429"
    fake_a.script.retry_after = "1"
    assert (await chat(first))["model_id"] == "b"
    assert await health_of(second, "a") == "healthy"
    redis_server.start()  # empty
    for client in (first, second):
        await until(lambda c=client: ready_up(c, True))  # type: ignore[misc]
    # the listeners subscribed again: the next verdict reaches the other instance
    fake_a.script.retry_after = "30"
    third_party = await sluice(config)  # its a is healthy: it tries a and sees the 429
    assert (await chat(third_party))["model_id"] == "b"

    async def cooled() -> bool:
        return await health_of(second, "a") == "unhealthy"

    await until(cooled)
