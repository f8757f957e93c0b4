"""Limits, each with its typed error or close code, and the slow-consumer policy."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import os
import socket
import struct
import tracemalloc
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from fakes.openai_server import FakeOpenAI
from server import GATEWAY, build_app
from tests.conftest import MakeClient, collect, make_config, openai_model, receive_json, text_of
from tests.ops_helpers import (
    ScriptedProvider,
    scrape,
    scripted_config,
    scripted_factory,
    value,
    with_sections,
)

URL = "/v1/language/r/chatStream"


def chat(request_id: str, text: str = "hi", **extra: Any) -> str:
    body = {"request_id": request_id, "message": {"content": text}, **extra}
    return json.dumps(body, ensure_ascii=False)


async def test_text_and_binary_frames_have_their_own_size_limits(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    limits = {"max_text_frame_bytes": 8192, "max_binary_frame_bytes": 2048}
    client = await sluice(with_sections(make_config(openai_model("a", fake_a)), limits=limits))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("fits", "é" * 3000))  # 6000 bytes of UTF-8: under 8192
        frames = await collect(ws, 1)
        assert text_of(frames["fits"]) == "Hello from fake"
        await ws.send_str(chat("big", "é" * 4500))  # 4500 characters, 9000 bytes
        msg = await ws.receive()
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 1009
    async with client.ws_connect(URL) as ws:
        await ws.send_bytes(b"\x01a" + b"\x00" * 1500)  # fits: an audio frame for request "a"
        err = await receive_json(ws)
        assert err["error"]["name"] == "unsupported_message_type"
        await ws.send_bytes(b"\x01a" + b"\x00" * 3000)
        msg = await ws.receive()
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 1009
    await wait_until(lambda: not client.server.app[GATEWAY].sessions, 5)
    metrics = await scrape(client)
    assert value(metrics, "sluice_socket_closes_total", reason="frame_too_large") == 2


async def test_requests_per_socket_metadata_and_history_each_end_just_that_request(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.delay = 0.05
    limits = {"max_requests_per_socket": 2, "max_metadata_bytes": 64, "max_message_history": 2}
    client = await sluice(with_sections(make_config(openai_model("a", fake_a)), limits=limits))
    history = [{"role": "user", "content": "x"}] * 3
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("one"))
        await ws.send_str(chat("two"))
        await ws.send_str(chat("three"))
        (refused,) = (await collect(ws, 1))["three"]
        assert refused["error"]["name"] == "too_many_requests"
        assert refused["error"]["limit"] == "max_requests_per_socket"
        frames = await collect(ws, 2)
        assert text_of(frames["one"]) == text_of(frames["two"]) == "Hello from fake"

        await ws.send_str(chat("meta", metadata={"blob": "y" * 100}))
        (refused,) = (await collect(ws, 1))["meta"]
        assert refused["error"]["name"] == "metadata_too_large"
        assert refused["metadata"] is None  # not echoed back
        await ws.send_str(chat("hist", message_history=history))
        (refused,) = (await collect(ws, 1))["hist"]
        assert refused["error"]["name"] == "message_history_too_long"
        assert refused["error"]["limit"] == "max_message_history"

        await ws.send_str(chat("fine", metadata={"small": 1}, message_history=history[:2]))
        assert text_of((await collect(ws, 1))["fine"]) == "Hello from fake"
    resp = await client.post(
        "/v1/language/r/chat", json={"message": {"content": "x"}, "message_history": history}
    )
    assert resp.status == 400 and (await resp.json())["name"] == "message_history_too_long"
    big = io.BytesIO(b"{" + b" " * (1 << 21) + b"}")
    resp = await client.post("/v1/language/r/chat", data=big)
    assert resp.status == 413 and (await resp.json())["name"] == "payload_too_large"
    metrics = await scrape(client)
    for reason in ("too_many_requests", "metadata_too_large"):
        assert value(metrics, "sluice_rejections_total", reason=reason) == 1
    assert value(metrics, "sluice_requests_total", outcome="rejected") == 4


# ---- the slow consumer ------------------------------------------------------------


class NeverReads:
    """A websocket client that upgrades, sends frames, and never reads a byte more.

    A plain non-blocking socket (no asyncio transport, which would keep reading
    into its own buffer) with a small receive buffer.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def connect(cls, host: str, port: int, path: str) -> NeverReads:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += await asyncio.wait_for(loop.sock_recv(sock, 1), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(sock)

    async def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, header + mask + masked)

    def close(self) -> None:
        self.sock.close()


async def wait_until(predicate: Any, within: float, step: float = 0.02) -> float:
    """Poll `predicate` until true; the seconds it took (fails after `within`)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        assert loop.time() - start < within, "condition not met in time"
        await asyncio.sleep(step)
    return loop.time() - start


def traced_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def start_scripted(aiohttp_client: Any, provider: ScriptedProvider, **limits: Any) -> Any:
    config = with_sections(scripted_config(), limits=limits)
    client: TestClient[Any, Any] = await aiohttp_client(
        build_app(config, provider_factory=scripted_factory(provider))
    )
    return client


async def test_a_client_that_never_reads_is_cut_and_its_work_cancelled(
    aiohttp_client: Any,
) -> None:
    provider = ScriptedProvider(endless=True, chunk_text="z" * 1000)
    client = await start_scripted(
        aiohttp_client,
        provider,
        max_queued_bytes_per_socket=256 << 10,
        slow_consumer_close_timeout="500ms",
    )
    gateway = client.server.app[GATEWAY]
    tracemalloc.start()
    try:
        # warm up every code path once, then take the baseline
        async with client.ws_connect(URL) as ws:
            provider.endless = False
            await ws.send_str(chat("warm"))
            await collect(ws, 1)
        await wait_until(lambda: not gateway.sessions, 5)
        baseline = traced_now()

        provider.endless = True
        stuck = await NeverReads.connect(client.host, client.port, URL)
        for i in range(5):
            await stuck.send_text(chat(f"flood-{i}"))
        await wait_until(lambda: provider.opened >= 5, 5)
        took = await wait_until(lambda: not gateway.sessions, 10)
        peak = tracemalloc.get_traced_memory()[1]
        await wait_until(lambda: provider.open_streams == 0, 5)
        after = traced_now()
        stuck.close()
    finally:
        tracemalloc.stop()
    assert took < 5.0  # bound + close timeout, never the client's goodwill
    assert after - baseline < 512 << 10, (baseline, after)
    assert peak - baseline < 24 << 20, (baseline, peak)
    metrics = await scrape(client)
    assert value(metrics, "sluice_socket_closes_total", reason="slow_consumer") == 1
    assert value(metrics, "sluice_requests_total", outcome="aborted") == 5
    assert value(metrics, "sluice_request_errors_total", error="slow_consumer") == 5
    assert value(metrics, "sluice_active_sockets") == 0
    assert value(metrics, "sluice_outbound_queue_bytes") == 0
    print(f"never-reading client cut after {took:.2f}s; peak +{(peak - baseline) >> 10} KiB")


async def test_a_slow_consumer_does_not_disturb_other_sockets(aiohttp_client: Any) -> None:
    provider = ScriptedProvider(endless=True, chunk_text="z" * 1000)
    client = await start_scripted(
        aiohttp_client,
        provider,
        max_queued_bytes_per_socket=128 << 10,
        slow_consumer_close_timeout="300ms",
    )
    gateway = client.server.app[GATEWAY]
    stuck = await NeverReads.connect(client.host, client.port, URL)
    await stuck.send_text(chat("flood"))
    async with client.ws_connect(URL) as ws:
        await wait_until(lambda: provider.opened >= 1, 5)
        provider.endless = False
        provider.chunks = ["still", " fine"]
        await ws.send_str(chat("polite"))
        frames = await collect(ws, 1)
        assert text_of(frames["polite"]) == "still fine"
        await wait_until(lambda: len(gateway.sessions) == 1, 10)
        await ws.send_str(chat("again"))
        assert text_of((await collect(ws, 1))["again"]) == "still fine"
    stuck.close()
