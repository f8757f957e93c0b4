"""Realtime sessions are open sockets like any other: the gauges count them and a
SIGTERM drain waits for their responses. A real `sluice serve` process, the `openai`
package's own realtime client, fakes for the STT, chat and TTS providers."""

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
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fakes.openai_server import FakeOpenAI, run_fake_openai
from fakes.stt_servers import FakeStt, run_fake_transcription
from fakes.tts_servers import FakeSpeechServer, run_fake_openai_speech
from tests.converse_helpers import NO_RETRY, chat_model, stt_model, tts_model
from tests.realtime_helpers import GA, Events

ROOT = Path(__file__).resolve().parent.parent
REPLY = ["It is", " noon.", " Anything", " else?"]
QUESTION = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "What time is it?"}],
}


@pytest.fixture
async def stt() -> AsyncIterator[FakeStt]:
    async with run_fake_transcription() as fake:
        yield fake


@pytest.fixture
async def chat() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        fake.script.chunks = list(REPLY)
        yield fake


@pytest.fixture
async def tts() -> AsyncIterator[FakeSpeechServer]:
    async with run_fake_openai_speech() as fake:
        yield fake


class Server:
    """A `sluice serve` subprocess on a free loopback port, serving agent "talk"."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"

    def sdk(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=f"{self.base}/v1", api_key="sk-anything")

    async def gauges_reach(self, http: aiohttp.ClientSession, sockets: int, requests: int) -> None:
        """Scrape until the realtime gauges read `sockets` and `requests` (with several
        workers a scrape sees the others' state as of their last publication)."""
        want = {"sluice_active_sockets": sockets, "sluice_active_requests": requests}
        seen: dict[str, float] = {}
        try:
            async with asyncio.timeout(10):
                while True:
                    seen = await self.gauges(http)
                    if all(seen.get(name) == value for name, value in want.items()):
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            pytest.fail(f"the gauges never read {want}: last {seen}")

    async def closes(self, http: aiohttp.ClientSession) -> dict[str, float]:
        """`sluice_socket_closes_total` of the realtime endpoint, by reason."""
        async with http.get(f"{self.base}/metrics") as resp:
            text = await resp.text()
        return {
            sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "sluice_socket_closes_total"
            and sample.labels.get("endpoint") == "realtime"
        }

    async def gauges(self, http: aiohttp.ClientSession) -> dict[str, float]:
        """The realtime endpoint's socket and request gauges for agent "talk"."""
        async with http.get(f"{self.base}/metrics") as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if labels.get("endpoint") == "realtime" and labels.get("router") == "talk":
                    out[sample.name] = sample.value
        return out


async def start(
    tmp_path: Path, stt: FakeStt, chat: FakeOpenAI, tts: FakeSpeechServer, **extra: Any
) -> Server:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    retry = NO_RETRY
    config = {
        "server": {"drain_grace": extra.pop("grace", "20s"), "log_level": "warning"},
        "routers": {
            "language": [{"id": "lm", "retry": retry, "models": [chat_model("chat", chat.url)]}],
            "speech": [
                {
                    "id": "sp",
                    "retry": retry,
                    "speak": {"models": [tts_model("tts", tts.url)]},
                    "listen": {"models": [stt_model("stt", stt.url)]},
                }
            ],
            "agent": [{"id": "talk", "listen": "sp", "chat": "lm", "speak": "sp"}],
        },
        **extra,
    }
    path = tmp_path / "sluice.yaml"
    path.write_text(json.dumps(config))  # YAML reads JSON
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "server.py"),
        "serve",
        "--config",
        str(path),
        "--port",
        str(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    server = Server(proc, port)
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
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


class Reading:
    """Reads one connection's events as they come (as a real client does: websockets
    drops what it buffered once the close arrives), until the server closes it."""

    def __init__(self, connection: Any) -> None:
        self.events = Events(GA)
        self.code: int | None = None
        self.task = asyncio.ensure_future(self._run(connection))

    async def _run(self, connection: Any) -> None:
        try:
            while True:
                await self.events.read(connection, lambda _: True, within=60)
        except ConnectionClosed as closed:
            self.code = closed.rcvd.code if closed.rcvd is not None else None

    async def seen(self, kind: str) -> dict[str, Any]:
        """The first event of `kind`, once it came (fails if the socket closed first)."""
        async with asyncio.timeout(20):
            while not self.events.of(kind):
                assert not self.task.done(), f"closed ({self.code}) before {kind}"
                await asyncio.sleep(0.02)
        return self.events.of(kind)[0]

    async def closed(self) -> int | None:
        """The close code, once the server closed the connection."""
        await asyncio.wait_for(self.task, 20)
        return self.code


async def ask(connection: Any) -> Reading:
    """A typed question and `response.create` on a fresh session; its reader."""
    reading = Reading(connection)
    await reading.seen("session.created")
    await connection.conversation.item.create(item=QUESTION)
    await connection.response.create()
    return reading


async def test_a_drain_waits_for_the_streaming_response_then_closes_with_1001(
    tmp_path: Path, stt: FakeStt, chat: FakeOpenAI, tts: FakeSpeechServer
) -> None:
    chat.script.delay = 0.5  # the reply streams for about two seconds
    server = await start(tmp_path, stt, chat, tts)
    try:
        async with aiohttp.ClientSession() as http:
            sdk = server.sdk()
            async with (
                sdk.realtime.connect(model="talk") as busy,
                sdk.realtime.connect(model="talk") as idle,
            ):
                idle_reading = Reading(idle)
                await idle_reading.seen("session.created")
                # a third session, open then closed: the gauges show it, then not
                async with sdk.realtime.connect(model="talk") as passing:
                    await Reading(passing).seen("session.created")
                    await server.gauges_reach(http, sockets=3, requests=0)
                await server.gauges_reach(http, sockets=2, requests=0)
                assert await server.closes(http) == {"client": 1}

                reading = await ask(busy)
                created = await reading.seen("response.created")
                # the response in flight is the session's one active request
                await server.gauges_reach(http, sockets=2, requests=1)
                assert not reading.events.of("response.done")  # still streaming

                server.proc.send_signal(signal.SIGTERM)
                assert await idle_reading.closed() == 1001  # idle: closed at once
                async with http.get(f"{server.base}/v1/ready") as resp:
                    assert resp.status == 503
                with pytest.raises(InvalidStatus) as refused:
                    async with sdk.realtime.connect(model="talk") as late:
                        await late.recv_bytes()
                assert refused.value.response.status_code == 503
                assert await reading.closed() == 1001  # after the response, not before
        events = reading.events
        done = events.of("response.done")
        assert len(done) == 1 and events.all[-1] is done[0]
        assert done[0]["response"]["id"] == created["response"]["id"]
        assert done[0]["response"]["status"] == "completed"
        deltas = events.of("response.output_audio_transcript.delta")
        assert "".join(e["delta"] for e in deltas) == "".join(REPLY)
        assert events.of("response.output_audio.delta")  # the reply's audio came whole
        assert await asyncio.wait_for(server.proc.wait(), 10) == 0
    finally:
        await stop(server)


async def test_under_on_drain_restart_a_busy_session_is_cut_with_1012(
    tmp_path: Path, stt: FakeStt, chat: FakeOpenAI, tts: FakeSpeechServer
) -> None:
    chat.script.delay = 0.5
    server = await start(tmp_path, stt, chat, tts, resume={"on_drain": "restart"})
    try:
        async with server.sdk().realtime.connect(model="talk") as busy:
            reading = await ask(busy)
            await reading.seen("response.created")
            server.proc.send_signal(signal.SIGTERM)
            assert await reading.closed() == 1012
        error = reading.events.of("error")[0]["error"]
        assert error["type"] == "server_error" and error["code"] == "server_restarting"
        assert not reading.events.of("response.done")
        assert await asyncio.wait_for(server.proc.wait(), 10) == 0
    finally:
        await stop(server)


async def test_at_the_grace_deadline_a_response_still_running_is_cut(
    tmp_path: Path, stt: FakeStt, chat: FakeOpenAI, tts: FakeSpeechServer
) -> None:
    chat.script.delay = 1.5  # each chunk takes longer than the grace
    server = await start(tmp_path, stt, chat, tts, grace="1s")
    try:
        async with server.sdk().realtime.connect(model="talk") as busy:
            reading = await ask(busy)
            await reading.seen("response.created")
            server.proc.send_signal(signal.SIGTERM)
            assert await reading.closed() == 1001
        error = reading.events.of("error")[0]["error"]
        assert error["type"] == "server_error" and error["code"] == "shutting_down"
        assert await asyncio.wait_for(server.proc.wait(), 10) == 0
    finally:
        await stop(server)
