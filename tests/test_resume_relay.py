"""Messages for a request that runs on another instance: relayed through Redis.

A client whose socket to instance A was lost resumes on instance B while A still
runs the request (real `sluice serve` processes, a real redis-server); what it sends
on B for that request (a chat `cancel`, speak's `text`) reaches the request on A,
and what A answers comes back through B.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from fakes.openai_server import FakeOpenAI
from fakes.tts_servers import FakeSpeechServer, run_fake_openai_speech
from tests.test_resume_instances import (
    chat,
    read_frames,
    redis_url,
    resume,
    start,
    upstream,
    url,
)
from tests.test_resume_speak import Listener, recorded
from tests.test_resume_speak import start as start_speak
from tests.test_resume_speak import url as speak_url

__all__ = ["redis_url", "upstream"]  # fixtures


def lose(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Cut the socket without a close frame: the server runs its requests on."""
    sock = ws.get_extra_info("socket")
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)


async def test_a_cancel_sent_to_another_instance_reaches_the_running_request(
    tmp_path: Path, upstream: FakeOpenAI, redis_url: str
) -> None:
    upstream.script.delay = 0.2  # an answer takes about 6 s: the cancel comes first
    a, b = await start(tmp_path, upstream, redis_url, 2)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url(a))
            await ws.send_str(chat("c1"))
            seen = await read_frames(ws, until=2)
            await recorded(redis_url, "c1", seen[-1]["seq"])
            lose(ws)
            await ws.close()
            async with http.ws_connect(url(b)) as other:
                await other.send_str(resume("c1", seen[-1]["seq"]))
                await other.send_str(json.dumps({"type": "cancel", "request_id": "c1"}))
                rest = await read_frames(other)
            # the provider call on A was closed
            await upstream.stats.wait_stream_closed(within=10)
    finally:
        for instance in (a, b):
            await instance.kill()
    terminal = rest[-1]
    assert terminal["type"] == "error" and terminal["error"]["name"] == "cancelled", rest
    assert terminal["seq"] == seen[-1]["seq"] + len(rest)  # A's frame, relayed by B
    words = [f for f in seen + rest if f["type"] == "chunk"]
    assert len(words) < len(upstream.script.chunks)


@pytest.fixture
async def voice() -> AsyncIterator[FakeSpeechServer]:
    async with run_fake_openai_speech() as fake:
        yield fake


async def test_speak_text_sent_to_another_instance_reaches_the_running_request(
    tmp_path: Path, voice: FakeSpeechServer, redis_url: str
) -> None:
    a, b = await start_speak(tmp_path, voice, redis_url)
    listener = Listener()
    first = {"type": "speak", "request_id": "t1", "text": "Hello there. ", "final": False}
    more = {"type": "text", "request_id": "t1", "text": "And goodbye.", "final": True}
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(speak_url(a))
            await ws.send_str(json.dumps(first))
            await listener.read(ws, until=lambda got: len(got.segments()) == 1)
            await recorded(redis_url, "t1", listener.seq)  # A wrote it (flush_interval)
            lose(ws)
            await ws.close()
            async with http.ws_connect(speak_url(b)) as other:
                await other.send_str(json.dumps(resume_msg("t1", listener.seq)))
                await other.send_str(json.dumps(more))
                await listener.read(other)
    finally:
        for instance in (a, b):
            await instance.kill()
    done = listener.frames[-1]
    assert done["type"] == "done", done
    assert [s["text"] for s in listener.segments()] == ["Hello there.", "And goodbye."]
    assert done["usage"]["characters"] == len(first["text"]) + len(more["text"])  # type: ignore[arg-type]
    assert voice.stats.texts == ["Hello there.", "And goodbye."]  # spoken on A only


def resume_msg(request_id: str, after_seq: int) -> dict[str, object]:
    return {"type": "resume", "request_id": request_id, "after_seq": after_seq}
