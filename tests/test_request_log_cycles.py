"""No reference cycles per request with the request log on (docs/performance.md's
`gc.DEBUG_SAVEALL` recipe): chat requests whose frames are numbered and recorded,
in memory or on a real redis-server, leave nothing that only the cycle collector
frees."""

from __future__ import annotations

import gc
import json

import pytest
from aiohttp import ClientWebSocketResponse
from redis.asyncio import Redis

from config.models import ResumeConfig
from fakes.openai_server import FakeOpenAI
from tests.conftest import MakeClient, collect, make_config, openai_model
from tests.redis_server import RedisServer


async def _serve(ws: ClientWebSocketResponse, prefix: str, count: int) -> None:
    for i in range(count):
        body = {"request_id": f"{prefix}{i}", "message": {"role": "user", "content": "x"}}
        await ws.send_str(json.dumps(body))
        frames = (await collect(ws, 1))[f"{prefix}{i}"]
        assert frames[-1]["seq"] == len(frames)


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_recorded_chat_requests_leave_no_cycles(
    sluice: MakeClient, fake_a: FakeOpenAI, request: pytest.FixtureRequest, store: str
) -> None:
    config = make_config(openai_model("a", fake_a))
    if store == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        resume = ResumeConfig(redis=server.url, flush_interval=0.005)
        config = config.model_copy(update={"resume": resume})
    client = await sluice(config)
    async with client.ws_connect("/v1/language/r/chatStream") as ws:
        await _serve(ws, "warm", 10)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await _serve(ws, "measured", 30)
            gc.collect()
            garbage = len(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert garbage == 0
    if store == "redis":  # the frames did go to Redis
        redis = Redis.from_url(server.url)
        try:
            assert await redis.keys("sluice:req:*:measured29")
        finally:
            await redis.aclose()
