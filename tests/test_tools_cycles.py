"""No reference cycles per request on the chat path with tools and images
(docs/performance.md's `gc.DEBUG_SAVEALL` recipe): a request that offers tools and
gets parallel calls back, and one with an inline image, leave nothing that only
the cycle collector frees."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse

from fakes.openai_server import FakeOpenAI, FakeToolCall
from tests.conftest import MakeClient, collect, make_config, openai_model

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}


async def _serve(
    ws: ClientWebSocketResponse, prefix: str, count: int, extra: dict[str, Any]
) -> None:
    for i in range(count):
        body: dict[str, Any] = {"request_id": f"{prefix}{i}", **extra}
        body.setdefault("message", {"role": "user", "content": "x"})
        await ws.send_str(json.dumps(body))
        frames = (await collect(ws, 1))[f"{prefix}{i}"]
        assert frames[-1]["type"] == "chunk"


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": TOOLS},
        {"message": {"role": "user", "content": [{"type": "text", "text": "?"}, IMAGE]}},
    ],
    ids=["tools", "image"],
)
async def test_tool_and_image_requests_leave_no_cycles(
    sluice: MakeClient, fake_a: FakeOpenAI, extra: dict[str, Any]
) -> None:
    fake_a.script.tool_calls = [FakeToolCall("f", '{"a": 1}'), FakeToolCall("f", '{"b": 2}')]
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect("/v1/language/r/chatStream") as ws:
        await _serve(ws, "warm", 10, extra)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await _serve(ws, "measured", 30, extra)
            gc.collect()
            garbage = len(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert garbage == 0
