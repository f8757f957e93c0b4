"""Resume across instances: real `sluice serve` processes sharing a real redis-server.

A request started on instance A is resumed on instance B (A alive: B relays A's
frames from Redis), and taken over by B when A was killed (-9) mid-answer: the
answer arrives complete and in order, checked character by character (the fake
upstream's answer is known, and it continues a partial answer the way vLLM does).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sluice_client import Backoff, ChatChunk, ClientOptions, ModelReset, SluiceClient

from fakes.openai_server import FakeOpenAI, run_fake_openai
from tests.conftest import is_terminal
from tests.redis_server import RedisServer
from tests.test_rolling_restart import ROOT, Balancer, Instance, free_ports, start_balancer

WORDS = [f"w{i} " for i in range(30)]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        fake.script.chunks = list(WORDS)
        fake.script.delay = 0.05  # an answer takes about 1.5 s
        yield fake


def write_config(path: Path, fake: FakeOpenAI, redis_url: str) -> Path:
    path.write_text(
        f"""
server:
  drain_grace: 10s
  log_level: info
resume:
  redis: {redis_url}
  flush_interval: 10ms
routers:
  language:
    - id: r
      models:
        - id: a
          openai:
            base_url: {fake.url}
            api_key: sk-resume-test
"""
    )
    return path


def chat(request_id: str) -> str:
    return json.dumps({"request_id": request_id, "message": {"role": "user", "content": "hi"}})


def resume(request_id: str, after_seq: int) -> str:
    return json.dumps({"type": "resume", "request_id": request_id, "after_seq": after_seq})


def url(instance: Instance) -> str:
    return f"ws://127.0.0.1:{instance.port}/v1/language/r/chatStream"


def answer_text(frames: list[dict[str, Any]]) -> str:
    """What a client shows: chunk contents, dropped at a `model_unavailable`."""
    text = ""
    for frame in frames:
        if frame["type"] == "error" and frame["error"]["name"] == "model_unavailable":
            text = ""
        elif frame["type"] == "chunk":
            text += frame["chunk"]["model_response"]["message"]["content"]
    return text


async def read_frames(
    ws: aiohttp.ClientWebSocketResponse, until: int | None = None
) -> list[dict[str, Any]]:
    """Frames until the terminal one (or `until` frames)."""
    frames: list[dict[str, Any]] = []
    while until is None or len(frames) < until:
        msg = await asyncio.wait_for(ws.receive(), 20)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frames.append(json.loads(msg.data))
        if is_terminal(frames[-1]):
            break
    return frames


def check_whole(frames: list[dict[str, Any]]) -> None:
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert answer_text(frames) == "".join(WORDS)
    assert sum(1 for f in frames if is_terminal(f)) == 1 and is_terminal(frames[-1])


def instance_logs(folder: Path) -> str:
    """The tail of every instance's log (for a failure message)."""
    return "".join(p.read_text()[-4000:] for p in sorted(folder.glob("i*.log")))


class Single(Instance):
    """An instance of one process (`--workers 1`), so kill -9 kills the server itself
    (a supervisor's workers would drain on their own)."""

    async def start(self) -> None:
        argv = [str(ROOT / "server.py"), "serve", "--config", str(self.config)]
        argv += ["--port", str(self.port), "--workers", "1"]
        log = (self.config.parent / f"{self.name}.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        log.close()
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                if self.proc.returncode is not None:
                    break
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/v1/ready") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        pytest.fail(f"sluice instance {self.name} did not become ready")


async def start(tmp_path: Path, fake: FakeOpenAI, redis_url: str, count: int) -> list[Instance]:
    config = write_config(tmp_path / "sluice.yaml", fake, redis_url)
    instances: list[Instance] = [
        Single(f"i{n}", port, config) for n, port in enumerate(free_ports(count))
    ]
    for instance in instances:
        await instance.start()
    return instances


async def test_a_request_of_a_live_instance_resumes_on_another(
    tmp_path: Path, upstream: FakeOpenAI, redis_url: str
) -> None:
    a, b = await start(tmp_path, upstream, redis_url, 2)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url(a))
            await ws.send_str(chat("x1"))
            seen = await read_frames(ws, until=4)
            sock = ws.get_extra_info("socket")
            assert sock is not None
            sock.shutdown(socket.SHUT_RDWR)  # lost, not closed: A runs the request on
            await ws.close()
            async with http.ws_connect(url(b)) as other:
                await other.send_str(resume("x1", seen[-1]["seq"]))
                rest = await read_frames(other)
                await other.send_str(resume("never", 0))
                missing = await read_frames(other)
    finally:
        for instance in (a, b):
            await instance.kill()
    check_whole(seen + rest)
    assert "switched_from" not in json.dumps(rest)  # relayed as A sent it
    assert missing[0]["error"]["name"] == "request_not_found"


async def test_a_killed_instances_request_is_taken_over_and_completed(
    tmp_path: Path, upstream: FakeOpenAI, redis_url: str
) -> None:
    a, b = await start(tmp_path, upstream, redis_url, 2)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url(a))
            await ws.send_str(chat("k1"))
            seen = await read_frames(ws, until=8)
            await a.kill()  # kill -9 mid-answer
            async with http.ws_connect(url(b)) as other:
                await other.send_str(resume("k1", seen[-1]["seq"]))
                rest = await read_frames(other)
            await ws.close()
    finally:
        for instance in (a, b):
            await instance.kill()
    whole = seen + rest
    assert [f["seq"] for f in whole] == list(range(1, len(whole) + 1))
    assert answer_text(whole) == "".join(WORDS)
    assert sum(1 for f in whole if is_terminal(f)) == 1 and is_terminal(whole[-1])
    assert whole[-1]["chunk"]["finish_reason"] == "complete"
    # B ran the rest: it continued the recorded answer, or restarted it when the
    # client had seen frames A never recorded (killed within a flush interval)
    continued = [f for f in rest if "switched_from" in f.get("chunk", {})]
    restarted = [f for f in rest if f["type"] == "error"]
    assert len(continued) + len(restarted) == 1


async def serving(balancer: Balancer, instances: list[Instance]) -> Instance:
    """The instance HAProxy has the client's socket on (current sessions)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(balancer.stats_url + ";csv") as resp,
    ):
        text = await resp.text()
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    busy = {
        row["svname"] for row in rows if row["pxname"] == "sluice" and row["scur"] not in ("", "0")
    }
    found = [i for i in instances if i.name in busy]
    assert len(found) == 1, busy
    return found[0]


async def chat_streams(
    client: SluiceClient, count: int, started: asyncio.Event, prefix: str
) -> list[str]:
    """`count` concurrent chat streams; `started` is set once each received two chunks."""
    going = [0]

    async def one(i: int) -> str:
        text = ""
        chunks = 0
        async for event in client.chat_stream("r", "hi", request_id=f"{prefix}{i}"):
            if isinstance(event, ModelReset):
                text = ""
            elif isinstance(event, ChatChunk):
                text += event.content
                chunks += 1
                if chunks == 2:
                    going[0] += 1
                    if going[0] == count:
                        started.set()
        return text

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_kill_9_behind_haproxy_every_stream_resumes_on_the_others(
    tmp_path: Path, upstream: FakeOpenAI, redis_url: str
) -> None:
    instances = await start(tmp_path, upstream, redis_url, 3)
    port_lb, port_stats = free_ports(2)
    balancer: Balancer | None = None
    try:
        balancer = await start_balancer(tmp_path, instances, port_lb, port_stats)
        options = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.5), heartbeat=5.0)
        async with SluiceClient(balancer.url, options=options) as client:
            started = asyncio.Event()
            streams = asyncio.ensure_future(chat_streams(client, 20, started, "s"))
            await asyncio.wait_for(started.wait(), 20)
            victim = await serving(balancer, instances)
            await victim.kill()  # kill -9 with 20 streams mid-answer
            try:
                texts = await asyncio.wait_for(streams, 40)
            except TimeoutError:
                logs = instance_logs(tmp_path)
                pytest.fail(f"streams did not end: client {client.stats}\n{logs}")
            stats = client.stats
    finally:
        if balancer is not None and balancer.proc.returncode is None:
            balancer.proc.terminate()
            await balancer.proc.wait()
        for instance in instances:
            await instance.kill()
    print(f"\nkill -9 with 20 streams: client {stats}")
    # every answer complete and in order, character by character
    assert texts == ["".join(WORDS)] * 20
    assert stats.lost == 0 and stats.failed == 0 and stats.completed == 20
    assert stats.resumed == 20


async def test_a_rolling_restart_with_resume_loses_nothing_within_the_grace(
    tmp_path: Path, upstream: FakeOpenAI, redis_url: str
) -> None:
    instances = await start(tmp_path, upstream, redis_url, 2)
    port_lb, port_stats = free_ports(2)
    balancer: Balancer | None = None
    drains: list[float] = []
    try:
        balancer = await start_balancer(tmp_path, instances, port_lb, port_stats)
        options = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.5), heartbeat=5.0)
        async with SluiceClient(balancer.url, options=options) as client:
            for round_ in range(2):
                started = asyncio.Event()
                streams = asyncio.ensure_future(chat_streams(client, 10, started, f"r{round_}-"))
                await asyncio.wait_for(started.wait(), 20)
                victim = await serving(balancer, instances)
                drains.append(await victim.drain(within=15))  # SIGTERM: 1012, resume
                assert await asyncio.wait_for(streams, 30) == ["".join(WORDS)] * 10
                await victim.start()
                await balancer.wait_status(victim.name, "UP")
            stats = client.stats
    finally:
        if balancer is not None and balancer.proc.returncode is None:
            balancer.proc.terminate()
            await balancer.proc.wait()
        for instance in instances:
            await instance.kill()
    print(f"\nrolling restart with resume: drains {drains} s, client {stats}")
    assert stats.lost == 0 and stats.failed == 0 and stats.completed == 20
    assert stats.resumed == 20  # every socket got 1012 mid-answer and resumed
    assert all(seconds < 10 for seconds in drains)  # within the drain grace
