"""`sluice serve --workers 2`: real processes on one loopback port.

Which worker holds a socket is read from `/metrics`' per-worker gauge
(`sluice_worker_active_sockets{pid}`); each scrape opens a new connection, so any
worker may answer it, and every answer must describe the whole server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from prometheus_client.parser import text_string_to_metric_families

from fakes.openai_server import FakeOpenAI, run_fake_openai
from security.keys import hash_key
from server import main
from tests.conftest import is_terminal

ROOT = Path(__file__).resolve().parent.parent
Samples = dict[str, list[tuple[dict[str, str], float]]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    """A supervisor and its workers on `port`; its log (stderr) in `log`."""

    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/language/r/chatStream"

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines


def fresh_session() -> aiohttp.ClientSession:
    """A session whose every request opens a new connection (any worker may take it)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def scrape(served: Served) -> Samples:
    async with fresh_session() as http, http.get(f"{served.base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for got, v in samples.get(name, []) if all(got.get(k) == x for k, x in labels.items())
    )


def per_worker(samples: Samples) -> dict[int, float]:
    """pid -> open websockets, from the per-worker gauge."""
    return {int(labels["pid"]): v for labels, v in samples.get("sluice_worker_active_sockets", [])}


async def wait_for_metrics(
    served: Served, ok: Callable[[Samples], bool], within: float = 10.0
) -> Samples:
    """Scrape until `ok(samples)` (workers publish their gauges every second)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        samples = await scrape(served)
        if ok(samples):
            return samples
        if loop.time() > deadline:
            pytest.fail(f"metrics never satisfied the condition: {per_worker(samples)}")
        await asyncio.sleep(0.2)


async def start(tmp_path: Path, config: str, workers: int = 2) -> Served:
    port = _free_port()
    path = tmp_path / "sluice.yaml"
    path.write_text(config)
    log = tmp_path / "sluice.log"
    with log.open("w") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "server.py"),
            "serve",
            "--config",
            str(path),
            "--port",
            str(port),
            "--workers",
            str(workers),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    served = Served(proc, port, log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline and proc.returncode is None:
        with contextlib.suppress(aiohttp.ClientConnectionError, AssertionError):
            if len(per_worker(await scrape(served))) == workers:
                return served
        await asyncio.sleep(0.1)
    await stop(served)
    pytest.fail(f"the workers did not come up:\n{log.read_text()[-3000:]}")


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return False


async def stop(served: Served) -> None:
    """Make sure nothing is left running: the supervisor, then any worker it left."""
    if served.proc.returncode is not None:
        return
    workers = children(served.proc.pid)
    served.proc.send_signal(signal.SIGKILL)
    await served.proc.wait()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def config_for(fake: FakeOpenAI, extra: str = "", grace: str = "20s") -> str:
    return f"""
server:
  drain_grace: {grace}
  log_level: info
{extra}
routers:
  language:
    - id: r
      models:
        - id: a
          openai:
            base_url: {fake.url}
            api_key: sk-workers-test
"""


def chat(request_id: str) -> str:
    return json.dumps({"request_id": request_id, "message": {"role": "user", "content": "hi"}})


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    frames = []
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            frames.append(json.loads(msg.data))
    return frames


async def answer(ws: aiohttp.ClientWebSocketResponse, request_id: str) -> list[dict[str, Any]]:
    await ws.send_str(chat(request_id))
    frames: list[dict[str, Any]] = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type is WSMsgType.TEXT, msg
        frames.append(json.loads(msg.data))
        if is_terminal(frames[-1]):
            return frames


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(
        f["chunk"]["model_response"]["message"]["content"] for f in frames if f["type"] == "chunk"
    )


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        yield fake


def spread(samples: Samples, sockets: int) -> bool:
    """Whether `sockets` are open in all and both workers hold some."""
    counts = per_worker(samples)
    return sum(counts.values()) == sockets and len(counts) == 2 and min(counts.values()) > 0


async def test_two_workers_share_the_port_and_metrics_sum_across_them(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    upstream.script.chunks = ["one ", "two"]
    served = await start(tmp_path, config_for(upstream))
    try:
        async with fresh_session() as http:
            sockets = [await http.ws_connect(served.ws_url) for _ in range(16)]
            for i, ws in enumerate(sockets):
                frames = await answer(ws, f"q{i}")
                assert text_of(frames) == "one two"
            samples = await wait_for_metrics(served, lambda s: spread(s, 16))
            assert len(set(per_worker(samples)) | {served.proc.pid}) == 3  # two workers
            for _ in range(8):  # whichever worker answers, it reports the whole server
                samples = await scrape(served)
                ended = total(samples, "sluice_requests_total", endpoint="chatStream")
                assert ended == 16
                assert total(samples, "sluice_requests_total", outcome="ok") == 16
                assert total(samples, "sluice_active_sockets", router="r") == 16
                assert total(samples, "sluice_frames_sent_total") >= 16 * 2
                healthy = total(samples, "sluice_model_health", model="a", state="healthy")
                assert healthy == 1  # the largest over workers, not a sum
            for ws in sockets:
                await ws.close()
            await wait_for_metrics(
                served, lambda s: total(s, "sluice_active_sockets", router="r") == 0
            )
    finally:
        await stop(served)


async def test_sigterm_drains_in_flight_streams_on_every_worker(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    # each stream takes about 3 s: still running when the workers' gauges (published
    # every second) are read below, on a loaded machine too
    upstream.script.chunks = ["tok "] * 60
    upstream.script.delay = 0.05
    served = await start(tmp_path, config_for(upstream))
    loop = asyncio.get_running_loop()
    try:
        async with fresh_session() as http:
            idle = [await http.ws_connect(served.ws_url) for _ in range(10)]
            busy = [await http.ws_connect(served.ws_url) for _ in range(10)]
            for s, ws in enumerate(busy):
                for i in range(5):
                    await ws.send_str(chat(f"s{s}-r{i}"))
            await upstream.stats.wait_until(lambda: upstream.stats.open_streams == 50, 10)
            await wait_for_metrics(
                served,
                lambda s: spread(s, 20) and total(s, "sluice_active_requests") == 50,
            )
            readers = [asyncio.ensure_future(read_until_closed(ws)) for ws in busy]
            idle_readers = [asyncio.ensure_future(read_until_closed(ws)) for ws in idle]

            served.proc.send_signal(signal.SIGTERM)
            signalled = loop.time()
            await asyncio.wait_for(asyncio.gather(*idle_readers), 5)
            assert loop.time() - signalled < 1.5
            assert all(ws.close_code == 1001 for ws in idle)
            for _ in range(4):  # every worker drains: readiness and upgrades refused
                async with http.get(f"{served.base}/v1/ready") as resp:
                    assert resp.status == 503
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(served.ws_url)
                assert refused.value.status == 503
            results = await asyncio.wait_for(asyncio.gather(*readers), 15)
            assert all(ws.close_code == 1001 for ws in busy)
        for s, frames in enumerate(results):
            for i in range(5):
                mine = [f for f in frames if f["request_id"] == f"s{s}-r{i}"]
                assert sum(1 for f in mine if is_terminal(f)) == 1 and is_terminal(mine[-1])
                assert mine[-1]["chunk"]["finish_reason"] == "complete"
                assert text_of(mine) == "tok " * 60
        assert await asyncio.wait_for(served.proc.wait(), 10) == 0
        stopped = [r for r in served.log_lines() if r["msg"] == "worker stopped"]
        assert len(stopped) == 2 and all(r["exit_status"] == 0 for r in stopped)
        drained = [r for r in served.log_lines() if r["msg"] == "drained"]
        assert {r["worker"] for r in drained} == {0, 1}
    finally:
        await stop(served)


async def test_a_killed_worker_is_restarted_and_its_sockets_released(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    served = await start(tmp_path, config_for(upstream, "limits:\n  max_sockets: 16"))
    try:
        async with fresh_session() as http:
            sockets = [await http.ws_connect(served.ws_url) for _ in range(16)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as full:
                await http.ws_connect(served.ws_url)
            assert full.value.status == 503
            samples = await wait_for_metrics(served, lambda s: spread(s, 16))
            counts = per_worker(samples)
            victim = min(counts, key=lambda pid: counts[pid])
            survivor = next(pid for pid in counts if pid != victim)
            lost = int(counts[victim])

            os.kill(victim, signal.SIGKILL)
            samples = await wait_for_metrics(
                served, lambda s: len(per_worker(s)) == 2 and victim not in per_worker(s)
            )
            assert survivor in per_worker(samples)
            for _ in range(10):  # the port keeps serving
                async with http.get(f"{served.base}/v1/health") as resp:
                    assert resp.status == 200
            closed = [ws for ws in sockets if ws.closed or (await _closes(ws))]
            assert len(closed) == lost
            # the dead worker's sockets no longer count against the server's cap
            again = [await http.ws_connect(served.ws_url) for _ in range(lost)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as full:
                await http.ws_connect(served.ws_url)
            assert full.value.status == 503
            for ws in [*sockets, *again]:
                await ws.close()
        died = [r for r in served.log_lines() if r["msg"] == "worker died: restarting"]
        assert len(died) == 1
        assert died[0]["pid"] == victim and died[0]["signal"] == "SIGKILL"
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), 10) == 0
    finally:
        await stop(served)


async def _closes(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """Whether the server side of `ws` is gone (a ping goes unanswered or fails)."""
    with contextlib.suppress(TimeoutError):
        msg = await asyncio.wait_for(ws.receive(), 0.5)
        return msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR)
    return False


async def test_key_and_server_caps_and_request_rate_hold_across_workers(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    keys = f"""
auth:
  keys:
    - id: capped
      hash: "{hash_key("key-capped")}"
      max_sockets: 14
    - id: open
      hash: "{hash_key("key-open")}"
    - id: slow
      hash: "{hash_key("key-slow")}"
      rate_limit: 5/m
limits:
  max_sockets: 20
"""
    served = await start(tmp_path, config_for(upstream, keys))

    async def attempt(
        http: aiohttp.ClientSession, key: str
    ) -> aiohttp.ClientWebSocketResponse | int:
        try:
            return await http.ws_connect(served.ws_url, headers={"Authorization": f"Bearer {key}"})
        except aiohttp.WSServerHandshakeError as error:
            return error.status

    try:
        async with fresh_session() as http:
            capped = [await attempt(http, "key-capped") for _ in range(28)]
            opened = [ws for ws in capped if not isinstance(ws, int)]
            assert len(opened) == 14  # the key's cap, across both workers
            assert sorted(s for s in capped if isinstance(s, int)) == [429] * 14
            await wait_for_metrics(served, lambda s: spread(s, 14))
            others = [await attempt(http, "key-open") for _ in range(10)]
            opened += [ws for ws in others if not isinstance(ws, int)]
            assert len(opened) == 20  # the server's cap, across both workers
            assert [s for s in others if isinstance(s, int)] == [503] * 4
            statuses = []
            for i in range(10):
                async with http.post(
                    f"{served.base}/v1/language/r/chat",
                    headers={"Authorization": "Bearer key-slow"},
                    json={"message": {"role": "user", "content": f"hi {i}"}},
                ) as resp:
                    statuses.append(resp.status)
            assert sorted(statuses) == [200] * 5 + [429] * 5
            samples = await scrape(served)
            assert total(samples, "sluice_rejections_total", reason="too_many_sockets") == 18
            assert total(samples, "sluice_rejections_total", reason="rate_limited") == 5
            for ws in opened:
                await ws.close()
    finally:
        await stop(served)


async def test_workers_drain_and_exit_when_the_supervisor_is_killed(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    served = await start(tmp_path, config_for(upstream, grace="1s"))
    workers = list(per_worker(await scrape(served)))
    try:
        assert len(workers) == 2
        served.proc.send_signal(signal.SIGKILL)
        await served.proc.wait()
        for _ in range(100):
            if not any(alive(pid) for pid in workers):
                break
            await asyncio.sleep(0.1)
        assert not any(alive(pid) for pid in workers)
        gone = [r for r in served.log_lines() if r["msg"] == "supervisor gone: draining"]
        assert {r["pid"] for r in gone} == set(workers)
    finally:
        await stop(served)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_second_signal_ends_every_worker_at_once(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    upstream.script.chunks = ["slow "] * 100
    upstream.script.delay = 0.2  # 20 s streams, grace 20 s: only the second signal ends them
    served = await start(tmp_path, config_for(upstream))
    workers = list(per_worker(await scrape(served)))
    loop = asyncio.get_running_loop()
    try:
        async with fresh_session() as http:
            sockets = [await http.ws_connect(served.ws_url) for _ in range(8)]
            for i, ws in enumerate(sockets):
                await ws.send_str(chat(f"long{i}"))
            await upstream.stats.wait_until(lambda: upstream.stats.open_streams == 8, 10)
            served.proc.send_signal(signal.SIGINT)
            await asyncio.sleep(0.5)
            assert served.proc.returncode is None  # draining: the streams still run
            served.proc.send_signal(signal.SIGINT)
            signalled = loop.time()
            assert await asyncio.wait_for(served.proc.wait(), 5) == 1
            assert loop.time() - signalled < 2.0
            for _ in range(50):
                if not any(alive(pid) for pid in workers):
                    break
                await asyncio.sleep(0.1)
            assert not any(alive(pid) for pid in workers)
            for ws in sockets:
                await ws.close()
    finally:
        await stop(served)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_workers_flag_needs_a_positive_count(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as exited:
            main(["serve", "--workers", bad])
        assert exited.value.code == 2
    assert "at least 1 worker" in capsys.readouterr().err


async def test_supervisor_refuses_a_port_another_server_holds(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = tmp_path / "sluice.yaml"
        config.write_text(config_for(upstream))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "server.py"),
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--workers",
            "2",
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()
    assert "worker started" not in err.decode()
