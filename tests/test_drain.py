"""Drain on SIGTERM (GEP 8 rollouts): a real `sluice serve` process under load."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from fakes.openai_server import FakeOpenAI, run_fake_openai
from tests.conftest import is_terminal
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A `sluice serve` subprocess on a free loopback port."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/v1/language/r/chatStream"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        yield fake


async def start_server(tmp_path: Path, fake: FakeOpenAI, grace: str, extra: str = "") -> Server:
    port = _free_port()
    config = tmp_path / "sluice.yaml"
    config.write_text(
        f"""
server:
  drain_grace: {grace}
  log_level: warning
routers:
  language:
    - id: r
      models:
        - id: a
          openai:
            base_url: {fake.url}
            api_key: sk-drain-test
{extra}"""
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "server.py"),
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    server = Server(proc, port)
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"{server.base}/v1/ready") as resp:
                    if resp.status == 200:
                        return server
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    await proc.wait()
    pytest.fail("sluice serve did not become ready")


async def stop(server: Server) -> None:
    if server.proc.returncode is None:
        server.proc.kill()
        await server.proc.wait()


def chat(request_id: str) -> str:
    return json.dumps({"request_id": request_id, "message": {"role": "user", "content": "hi"}})


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    frames = []
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            frames.append(json.loads(msg.data))
    return frames


async def test_sigterm_drains_in_flight_streams_and_refuses_new_work(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    upstream.script.chunks = ["tok "] * 20
    upstream.script.delay = 0.05  # each stream takes about 1 s
    server = await start_server(tmp_path, upstream, grace="20s")
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as http:
            idle = [await http.ws_connect(server.ws_url) for _ in range(20)]
            busy = [await http.ws_connect(server.ws_url) for _ in range(5)]
            for s, ws in enumerate(busy):
                for i in range(20):
                    await ws.send_str(chat(f"s{s}-r{i}"))
            await upstream.stats.wait_until(lambda: upstream.stats.open_streams == 100, 10)
            readers = [asyncio.ensure_future(read_until_closed(ws)) for ws in busy]
            idle_readers = [asyncio.ensure_future(read_until_closed(ws)) for ws in idle]

            server.proc.send_signal(signal.SIGTERM)
            signalled = loop.time()

            await asyncio.wait_for(asyncio.gather(*idle_readers), 5)
            idle_closed_after = loop.time() - signalled
            assert all(ws.close_code == 1001 for ws in idle)

            async with http.get(f"{server.base}/v1/ready") as resp:
                assert resp.status == 503
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(server.ws_url)
            assert refused.value.status == 503

            await busy[0].send_str(chat("late"))
            results = await asyncio.wait_for(asyncio.gather(*readers), 15)
            assert all(ws.close_code == 1001 for ws in busy)

        late = [f for f in results[0] if f["request_id"] == "late"]
        assert len(late) == 1 and late[0]["error"]["name"] == "shutting_down"
        assert late[0]["error"]["finish_reason"] == "error"
        for s, frames in enumerate(results):
            for i in range(20):
                mine = [f for f in frames if f["request_id"] == f"s{s}-r{i}"]
                terminals = [f for f in mine if is_terminal(f)]
                assert len(terminals) == 1 and mine[-1] is terminals[0]
                assert terminals[0]["chunk"]["finish_reason"] == "complete"
                text = "".join(
                    f["chunk"]["model_response"]["message"]["content"]
                    for f in mine
                    if f["type"] == "chunk"
                )
                assert text == "tok " * 20
        assert await asyncio.wait_for(server.proc.wait(), 10) == 0
        assert idle_closed_after < 1.0
    finally:
        await stop(server)


async def test_grace_deadline_ends_remaining_requests_with_shutting_down(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    upstream.script.chunks = ["slow "] * 100
    upstream.script.delay = 0.2  # 20 s streams: longer than the grace
    server = await start_server(tmp_path, upstream, grace="1s")
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.ws_url)
            for i in range(5):
                await ws.send_str(
                    json.dumps(
                        {
                            "request_id": f"g{i}",
                            "message": {"role": "user", "content": "hi"},
                            "metadata": {"i": i},
                        }
                    )
                )
            await upstream.stats.wait_until(lambda: upstream.stats.open_streams == 5, 10)
            server.proc.send_signal(signal.SIGTERM)
            signalled = loop.time()
            frames = await asyncio.wait_for(read_until_closed(ws), 10)
            assert ws.close_code == 1001
        exit_code = await asyncio.wait_for(server.proc.wait(), 10)
        elapsed = loop.time() - signalled
        assert exit_code == 0
        assert elapsed < 5.0  # grace 1 s plus shutdown work, never the 20 s streams
        for i in range(5):
            mine = [f for f in frames if f["request_id"] == f"g{i}"]
            assert mine[-1]["type"] == "error"
            assert mine[-1]["error"]["name"] == "shutting_down"
            assert mine[-1]["metadata"] == {"i": i}
            assert sum(1 for f in mine if is_terminal(f)) == 1
        await upstream.stats.wait_until(lambda: upstream.stats.open_streams == 0, 5)
    finally:
        await stop(server)


@pytest.mark.parametrize("log", ["redis", "memory"])
async def test_a_drain_closes_only_resuming_clients_busy_sockets_with_1012(
    tmp_path: Path, upstream: FakeOpenAI, redis_server: RedisServer, log: str
) -> None:
    """`resume.on_drain: auto` (the default), with the request log on Redis: a client
    that said it resumes (`?resume=1`) is told 1012 at once and its request runs on
    detached; a Glide 0.1.0 client, which cannot resume, keeps GEP 8's drain and gets
    its answer. With the in-memory log (a reconnect elsewhere could not resume) both
    get GEP 8's drain."""
    upstream.script.chunks = ["tok "] * 40
    upstream.script.delay = 0.05  # each stream takes about 2 s
    extra = f"resume:\n  redis: {redis_server.url}\n" if log == "redis" else ""
    server = await start_server(tmp_path, upstream, grace="20s", extra=extra)
    try:
        async with aiohttp.ClientSession() as http:
            legacy = await http.ws_connect(server.ws_url)
            resuming = await http.ws_connect(f"{server.ws_url}?resume=1")
            await legacy.send_str(chat("old"))
            await resuming.send_str(chat("new"))
            await upstream.stats.wait_until(lambda: upstream.stats.open_streams == 2, 10)
            readers = [asyncio.ensure_future(read_until_closed(ws)) for ws in (legacy, resuming)]

            server.proc.send_signal(signal.SIGTERM)
            resumed_frames = await asyncio.wait_for(readers[1], 15)
            if log == "redis":
                assert not readers[0].done()  # told at once, while the other answer runs
                assert resuming.close_code == 1012
                assert not any(is_terminal(f) for f in resumed_frames)  # it runs on, detached
            else:
                assert resuming.close_code == 1001
                [terminal] = [f for f in resumed_frames if is_terminal(f)]
                assert terminal["chunk"]["finish_reason"] == "complete"

            legacy_frames = await asyncio.wait_for(readers[0], 15)
            assert legacy.close_code == 1001
            [terminal] = [f for f in legacy_frames if is_terminal(f)]
            assert terminal["chunk"]["finish_reason"] == "complete"
        assert await asyncio.wait_for(server.proc.wait(), 15) == 0
    finally:
        await stop(server)
