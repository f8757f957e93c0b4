"""Config reload of a real `sluice serve` process: SIGHUP with one and with two
workers, `sluice reload` through the pidfile, and `server.watch_config`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from fakes.openai_server import FakeOpenAI, run_fake_openai
from server import main
from tests.test_workers import (
    ROOT,
    Samples,
    Served,
    _free_port,
    answer,
    children,
    fresh_session,
    scrape,
    stop,
    text_of,
    total,
)


def config(fake: FakeOpenAI, routers: tuple[str, ...], watch: bool = False) -> str:
    blocks = "".join(
        f"""
    - id: {router_id}
      models:
        - id: m-{router_id}
          openai:
            base_url: {fake.url}
            api_key: sk-reload-process
"""
        for router_id in routers
    )
    return f"""
server:
  drain_grace: 5s
  watch_config: {str(watch).lower()}
routers:
  language:{blocks}
"""


async def start(tmp_path: Path, text: str, workers: int) -> tuple[Served, Path, Path]:
    """`sluice serve --workers N` on a free port; (served, config path, pidfile)."""
    port = _free_port()
    path = tmp_path / "sluice.yaml"
    path.write_text(text)
    pidfile = tmp_path / "sluice.pid"
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
            "--pidfile",
            str(pidfile),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    served = Served(proc, port, log)
    ready = await wait_for(served, lambda s: "sluice_config_reloads_total" in s, within=30)
    if not ready or not pidfile.exists():
        await stop(served)
        pytest.fail(f"sluice did not come up:\n{log.read_text()[-3000:]}")
    if workers > 1:  # every worker listens (workers publish their gauges every second)
        up = await wait_for(
            served, lambda s: len(s.get("sluice_worker_active_sockets", [])) == workers
        )
        assert up, served.log.read_text()[-3000:]
    return served, path, pidfile


async def wait_for(served: Served, ok: Callable[[Samples], bool], within: float = 15.0) -> bool:
    """Scrape /metrics (any worker) until `ok`; False if it never held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline and served.proc.returncode is None:
        with contextlib.suppress(aiohttp.ClientConnectionError, AssertionError):
            if ok(await scrape(served)):
                return True
        await asyncio.sleep(0.1)
    return False


async def routers_listed(served: Served) -> list[str]:
    async with fresh_session() as http, http.get(f"{served.base}/v1/language/") as resp:
        body = await resp.json()
    return [r["id"] for r in body["routers"]]


def applied(count: int) -> Callable[[Samples], bool]:
    return lambda s: total(s, "sluice_config_reloads_total", outcome="applied") == count


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        yield fake


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_reloads_every_worker_and_keeps_open_sockets(
    tmp_path: Path, upstream: FakeOpenAI, workers: int
) -> None:
    upstream.script.chunks = ["one ", "two"]
    served, path, _ = await start(tmp_path, config(upstream, ("r",)), workers)
    try:
        async with fresh_session() as http:
            sockets = [await http.ws_connect(served.ws_url) for _ in range(4)]
            path.write_text(config(upstream, ("r", "r2")))
            served.proc.send_signal(signal.SIGHUP)
            # each worker reloads itself and counts it: the sum is the number of workers
            assert await wait_for(served, applied(workers)), served.log.read_text()[-3000:]
            for _ in range(4):  # new connections: whichever worker answers has r2
                assert await routers_listed(served) == ["r", "r2"]
            for i, ws in enumerate(sockets):  # opened before the reload, still serving
                assert text_of(await answer(ws, f"q{i}")) == "one two"
                await ws.close()
            new = await http.ws_connect(served.ws_url.replace("/r/", "/r2/"))
            assert text_of(await answer(new, "r2")) == "one two"
            await new.close()
        assert served.proc.returncode is None
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), 20) == 0
    finally:
        await stop(served)


async def test_sluice_reload_checks_the_file_then_signals_the_server(
    tmp_path: Path, upstream: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    served, path, pidfile = await start(tmp_path, config(upstream, ("r",)), workers=2)
    try:
        path.write_text(config(upstream, ("r",)).replace("drain_grace", "drain_grase"))
        args = ["reload", "--pidfile", str(pidfile), "--config", str(path)]
        assert main(args) == 1
        assert "server.drain_grase: unknown key" in capsys.readouterr().err

        path.write_text(config(upstream, ("r", "r2")))
        assert main(args) == 0
        assert "sent SIGHUP" in capsys.readouterr().out
        assert await wait_for(served, applied(2)), served.log.read_text()[-3000:]
        assert await routers_listed(served) == ["r", "r2"]
        samples = await scrape(served)  # the invalid file never reached the server
        assert total(samples, "sluice_config_reloads_total", outcome="rejected") == 0

        # a worker that dies after the reload comes back with the reloaded config
        def worker_pids(s: Samples) -> set[int]:
            return {int(labels["pid"]) for labels, _ in s.get("sluice_worker_active_sockets", [])}

        killed = min(worker_pids(samples))
        assert killed in children(served.proc.pid)
        os.kill(killed, signal.SIGKILL)

        def replaced(s: Samples) -> bool:
            pids = worker_pids(s)
            return len(pids) == 2 and killed not in pids

        assert await wait_for(served, replaced), served.log.read_text()[-3000:]
        for _ in range(8):
            assert await routers_listed(served) == ["r", "r2"]
    finally:
        await stop(served)
    assert main(["reload", "--pidfile", str(tmp_path / "none.pid")]) == 1


async def test_an_invalid_file_on_sighup_is_counted_and_the_old_config_serves(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    served, path, _ = await start(tmp_path, config(upstream, ("r",)), workers=1)
    try:
        path.write_text(config(upstream, ("r", "r2")).replace("5s", "soon"))
        served.proc.send_signal(signal.SIGHUP)
        rejected = await wait_for(
            served, lambda s: total(s, "sluice_config_reloads_total", outcome="rejected") == 1
        )
        assert rejected
        problems = [
            line for line in served.log_lines() if line.get("msg") == "config reload: problem"
        ]
        assert [(p["file"], p["line"], p["field"]) for p in problems] == [
            (str(path), 3, "server.drain_grace")
        ]
        assert await routers_listed(served) == ["r"]
    finally:
        await stop(served)


async def test_watch_config_reloads_when_the_file_changes(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    served, path, _ = await start(tmp_path, config(upstream, ("r",), watch=True), workers=1)
    try:
        path.write_text(config(upstream, ("r", "r2"), watch=True))
        assert await wait_for(served, applied(1)), served.log.read_text()[-3000:]
        assert await routers_listed(served) == ["r", "r2"]
    finally:
        await stop(served)
