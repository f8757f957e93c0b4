"""Test helper: Sluice with the OpenAI-compatible routes, and the official SDK pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from aiohttp.test_utils import TestClient
from openai import AsyncOpenAI

import server
from config.models import SluiceConfig

Client = TestClient[Any, Any]
MakeClient = Callable[[SluiceConfig], Awaitable[Client]]


def openai_app_factory(aiohttp_client: Any) -> MakeClient:
    """`make(config)` -> a loopback test client of `server.build_app(config)` (which
    serves the OpenAI-compatible routes)."""

    async def make(config: SluiceConfig) -> Client:
        client: Client = await aiohttp_client(server.build_app(config))
        return client

    return make


@asynccontextmanager
async def sdk(
    client: Client, api_key: str = "unused", **options: Any
) -> AsyncIterator[AsyncOpenAI]:
    """The official SDK with `base_url` at the test server's `/v1` (no proxies, no retries)."""
    http = httpx.AsyncClient(trust_env=False, timeout=30)
    openai = AsyncOpenAI(
        base_url=str(client.make_url("/v1")),
        api_key=api_key,
        max_retries=0,
        http_client=http,
        **options,
    )
    try:
        yield openai
    finally:
        await openai.close()
        await http.aclose()
