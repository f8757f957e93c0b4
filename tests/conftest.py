"""Shared fixtures: fake providers on loopback and a Sluice app configured against them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from config.models import SluiceConfig
from fakes.openai_server import FakeOpenAI, run_fake_openai
from server import build_app
from tests.redis_server import RedisServer

FAST_CLIENT = {"first_chunk_timeout": "1s", "idle_timeout": "1s", "timeout": "5s"}
FAST_RETRY = {"max_retries": 1, "min_delay": "50ms", "max_delay": "100ms", "jitter": 0}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session, as the app shares one between provider adapters."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real `redis-server` on a free loopback port for this test, stopped after."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fake_a() -> AsyncIterator[FakeOpenAI]:
    """A fake OpenAI-compatible upstream."""
    async with run_fake_openai() as fake:
        yield fake


@pytest.fixture
async def fake_b() -> AsyncIterator[FakeOpenAI]:
    """A second, independent fake upstream."""
    async with run_fake_openai() as fake:
        fake.script.chunks = ["Backup", " answer"]
        yield fake


def openai_model(model_id: str, fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    """A model entry pointing at `fake`."""
    return {
        "id": model_id,
        "client": FAST_CLIENT,
        "openai": {
            "base_url": fake.url,
            "model": f"gpt-{model_id}",
            "api_key": "sk-test-SECRET-1234",
        },
        **extra,
    }


def make_config(*models: dict[str, Any], router_id: str = "r", **router: Any) -> SluiceConfig:
    """A config with one language router over `models`."""
    return SluiceConfig.model_validate(
        {
            "routers": {
                "language": [
                    {"id": router_id, "retry": FAST_RETRY, "models": list(models), **router}
                ]
            }
        }
    )


MakeClient = Callable[[SluiceConfig], Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def sluice(aiohttp_client: Any) -> MakeClient:
    """Start Sluice with a config; returns a test client bound to 127.0.0.1."""

    async def make(config: SluiceConfig) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(build_app(config))
        return client

    return make


async def receive_json(ws: ClientWebSocketResponse, within: float = 5.0) -> dict[str, Any]:
    """The next text frame as JSON (fails on close or timeout)."""
    msg = await asyncio.wait_for(ws.receive(), within)
    assert msg.type is WSMsgType.TEXT, f"expected a text frame, got {msg.type}: {msg.data!r}"
    data: dict[str, Any] = json.loads(msg.data)
    return data


def is_terminal(frame: dict[str, Any]) -> bool:
    """Whether a server frame ends its request (carries a finish_reason)."""
    if frame["type"] == "chunk":
        return "finish_reason" in frame["chunk"]
    if frame["type"] == "error":
        return "finish_reason" in frame["error"]
    return False


async def collect(
    ws: ClientWebSocketResponse, count: int, within: float = 10.0
) -> dict[str | None, list[dict[str, Any]]]:
    """Read frames until `count` requests ended; frames grouped by request_id.

    Fails if a frame for a request arrives after that request's terminal frame.
    """
    by_id: dict[str | None, list[dict[str, Any]]] = {}
    ended: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while len(ended) < count:
        frame = await receive_json(ws, max(0.01, deadline - loop.time()))
        rid = frame["request_id"]
        assert rid not in ended, f"frame after the terminal frame: {frame}"
        by_id.setdefault(rid, []).append(frame)
        if rid is not None and is_terminal(frame):
            ended.add(rid)
    return by_id


def text_of(frames: list[dict[str, Any]]) -> str:
    """Concatenated chunk content since the last model_unavailable reset."""
    text = ""
    for frame in frames:
        if frame["type"] == "error" and frame["error"]["name"] == "model_unavailable":
            text = ""
        elif frame["type"] == "chunk":
            text += frame["chunk"]["model_response"]["message"]["content"]
    return text
