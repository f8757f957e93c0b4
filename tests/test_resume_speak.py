"""Speak after a takeover: real `sluice serve` processes sharing a real redis-server.

A speak request runs on instance A, which is killed (-9) in the middle of a
sentence; the client resumes on instance B, which speaks again from the first
sentence A had not finished, numbering on after A's frames. The client keeps
what it received, drops what the `model_unavailable` notice says, and ends with
exactly the audio of every sentence once, in order (the fake speaks a known tone
per sentence, so every byte is checked).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from audio.encode import wav_header
from fakes.tts_servers import FakeSpeechServer, run_fake_openai_speech, tone
from tests.redis_server import RedisServer
from tests.speak_helpers import is_speak_terminal, split_binary
from tests.test_resume_instances import Single
from tests.test_rolling_restart import Instance, free_ports

RATE = 24000
SENTENCES = [
    "The first sentence is here.",
    "A second one follows it.",
    "Then there is a third.",
    "The fourth sentence comes next.",
    "And the fifth ends it.",
]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def voice() -> AsyncIterator[FakeSpeechServer]:
    async with run_fake_openai_speech() as fake:
        fake.script.chunk_ms = 20
        fake.script.delay = 0.03  # a sentence takes about 0.4 s to arrive
        yield fake


async def start(tmp_path: Path, fake: FakeSpeechServer, redis_url: str) -> list[Instance]:
    config = tmp_path / "sluice.yaml"
    config.write_text(
        f"""
server:
  log_level: info
resume:
  redis: {redis_url}
  flush_interval: 10ms
routers:
  speech:
    - id: s
      speak:
        models:
          - id: tts
            client: {{first_chunk_timeout: 5s, idle_timeout: 5s, timeout: 30s}}
            openai:
              base_url: {fake.url}
              model: tts-fake
              api_key: sk-resume-test
"""
    )
    instances: list[Instance] = [
        Single(f"i{n}", port, config) for n, port in enumerate(free_ports(2))
    ]
    for instance in instances:
        await instance.start()
    return instances


def url(instance: Instance) -> str:
    return f"ws://127.0.0.1:{instance.port}/v1/speech/s/speak"


class Listener:
    """What a client keeps of one speak request: frames in order (binary counted),
    its audio after drops, and the last `seq` seen."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.kept = bytearray()
        self.seq = 0
        self.audio_seqs: list[int] = []

    async def read(self, ws: aiohttp.ClientWebSocketResponse, until: Any = None) -> None:
        """Frames until the terminal one, or until `until(self)` holds."""
        while until is None or not until(self):
            msg = await asyncio.wait_for(ws.receive(), 20)
            self.seq += 1
            if msg.type is aiohttp.WSMsgType.BINARY:
                _, audio = split_binary(msg.data)
                self.kept += audio
                self.audio_seqs.append(self.seq)
                continue
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            assert frame.get("seq") == self.seq, (json.dumps(frame), self.seq)
            self.frames.append(frame)
            if frame["type"] == "error" and frame["error"]["name"] == "model_unavailable":
                drop = frame["error"]["drop_bytes"]
                assert 0 < drop <= len(self.kept)
                del self.kept[-drop:]
            if is_speak_terminal(frame):
                return

    def segments(self) -> list[dict[str, Any]]:
        return [f["segment"] for f in self.frames if f["type"] == "segment"]


def mid_third_sentence(listener: Listener) -> bool:
    """Two sentences spoken whole and some audio of the third received."""
    return (
        len(listener.segments()) == 2
        and bool(listener.audio_seqs)
        and (listener.audio_seqs[-1] > listener.frames[-1]["seq"])
    )


async def recorded(redis_url: str, request_id: str, seq: int) -> None:
    """Wait until the log in Redis holds the request's frames up to `seq` (the owner
    writes every `flush_interval`), so the takeover knows all the client saw."""
    redis = Redis.from_url(redis_url)
    try:
        for _ in range(400):
            # the stream of the request (beside its :fence, :lease, :meta keys)
            for name in await redis.keys(f"sluice:req:*:{request_id}"):
                # an entry's id is the seq of the last frame it holds
                last = await redis.xrevrange(name, count=1)
                if last and int(last[0][0].split(b"-")[1]) >= seq:
                    return
            await asyncio.sleep(0.01)
    finally:
        await redis.aclose()
    pytest.fail(f"the owner never recorded frame {seq}")


@pytest.mark.parametrize("encoding", ["pcm_s16le", "wav"])
async def test_a_killed_instances_speak_request_is_spoken_again_from_the_unfinished_sentence(
    tmp_path: Path, voice: FakeSpeechServer, redis_url: str, encoding: str
) -> None:
    a, b = await start(tmp_path, voice, redis_url)
    # one Redis for the module: an id of its own per test (a stream left by the last
    # test under the same id would satisfy `recorded` before this owner wrote a frame)
    rid = f"sp-{encoding}"
    listener = Listener()
    text = " ".join(SENTENCES)
    speak = {
        "type": "speak",
        "request_id": rid,
        "text": text,
        "final": True,
        "format": {"encoding": encoding, "sample_rate": RATE},
    }
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url(a))
            await ws.send_str(json.dumps(speak))
            await listener.read(ws, until=mid_third_sentence)
            await recorded(redis_url, rid, listener.seq)
            await a.kill()  # kill -9 in the middle of the third sentence
            seen = listener.seq
            async with http.ws_connect(url(b)) as other:
                resume = {"type": "resume", "request_id": rid, "after_seq": seen}
                await other.send_str(json.dumps(resume))
                await listener.read(other)
            await ws.close()
    finally:
        for instance in (a, b):
            await instance.kill()

    done = listener.frames[-1]
    assert done["type"] == "done", done
    segments = listener.segments()
    assert [s["segment_id"] for s in segments] == list(range(len(SENTENCES)))
    assert [s["text"] for s in segments] == SENTENCES
    # one whole answer: every sentence's audio once, in order, byte for byte
    header = wav_header(RATE, 1) if encoding == "wav" else b""  # once, first
    assert bytes(listener.kept) == header + b"".join(tone(s, RATE, 10.0) for s in SENTENCES)
    assert done["segments"] == len(SENTENCES)
    assert done["usage"]["characters"] == len(text)
    assert done["usage"]["audio_ms"] == sum(s["audio_ms"] for s in segments)
    # B told the client to drop the third sentence's partial audio, then spoke it again
    [notice] = [f for f in listener.frames if f["type"] == "error"]
    assert notice["error"]["name"] == "model_unavailable" and notice["error"]["segment_id"] == 2
    assert notice["seq"] == seen + 1
    # each segment names the seqs of its audio, before and after the takeover
    after = [s for s in segments if s["segment_id"] >= 2]
    covered = [n for s in after for n in range(s["audio_seq"][0], s["audio_seq"][1] + 1)]
    assert covered == [n for n in listener.audio_seqs if n > seen]
    # B synthesised only what A had not finished
    spoken = voice.stats.texts
    assert spoken.count(SENTENCES[0]) == 1 and spoken.count(SENTENCES[2]) == 2
