"""Listen after a takeover: real `sluice serve` processes sharing a real redis-server.

A listen request runs on instance A, which is killed (-9) while the second of three
utterances is being sent (its `speech_started` seen, no final transcript yet). The
client resumes on instance B and, as docs/resume.md section 7 says, resends its
unacknowledged tail behind `audio_offset` (from the end of the last final
transcript), then the rest of its audio and `end`. B starts a fresh listen run on
the request's timeline: every utterance gets exactly one final transcript, segment
ids go on from A's, and the times are those of the request's audio.

The fake STT "hears" a checksum of the PCM it got (`pcm <samples> <sum>`): each
utterance sits in digital silence, so a final transcript whose sum is the
utterance's heard every sample of its speech once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from sluice_client import (
    AudioFormat,
    Backoff,
    ClientOptions,
    SluiceClient,
    SpeechStarted,
    Transcript,
)

from audio.encode import wav_header
from fakes.stt_servers import FakeStt, pcm_totals, run_fake_transcription
from protocol.messages import encode_binary
from tests.listen_client import is_terminal
from tests.redis_server import RedisServer
from tests.speech_audio import silence, speech_16k, synthesize
from tests.test_resume_instances import Single, serving
from tests.test_resume_speak import recorded
from tests.test_rolling_restart import Balancer, Instance, free_ports, start_balancer

TEXTS = ["turn on the kitchen lights", "what is the weather tomorrow", "open the garage door"]
BYTES_PER_MS = 32  # 16 kHz mono PCM16
CHUNK = 640  # 20 ms


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def utterances() -> list[bytes]:
    """Each text spoken (espeak-ng, 16 kHz), with silence around it."""
    spoken = synthesize(TEXTS)
    return [
        np.concatenate([silence(300), speech_16k(spoken[t]), silence(900)]).astype("<i2").tobytes()
        for t in TEXTS
    ]


@pytest.fixture
async def stt() -> AsyncIterator[FakeStt]:
    async with run_fake_transcription() as fake:
        yield fake


async def start(tmp_path: Path, stt: FakeStt, redis_url: str) -> list[Instance]:
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
      listen:
        vad: {{hangover: 300ms}}
        models:
          - id: stt
            client: {{first_chunk_timeout: 5s, idle_timeout: 5s, timeout: 30s}}
            openai:
              base_url: {stt.url}
              api_key: sk-stt
"""
    )
    instances: list[Instance] = [
        Single(f"i{n}", port, config) for n, port in enumerate(free_ports(2))
    ]
    for instance in instances:
        await instance.start()
    return instances


def url(instance: Instance) -> str:
    return f"ws://127.0.0.1:{instance.port}/v1/speech/s/listen"


async def send(ws: aiohttp.ClientWebSocketResponse, rid: str, audio: bytes) -> None:
    for i in range(0, len(audio), CHUNK):
        await ws.send_bytes(encode_binary(rid, audio[i : i + CHUNK]))


class Frames:
    """A client's frames of the request, with their `seq` checked."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    @property
    def seq(self) -> int:
        return self.frames[-1]["seq"] if self.frames else 0

    async def read(self, ws: aiohttp.ClientWebSocketResponse, until: Any = None) -> None:
        while until is None or not until(self.frames):
            msg = await asyncio.wait_for(ws.receive(), 30)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            assert frame.get("seq") == self.seq + 1, frame
            self.frames.append(frame)
            if is_terminal(frame):
                return

    def finals(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "transcript" and f["is_final"]]


def checksum(pcm: bytes) -> tuple[int, int]:
    samples = np.frombuffer(pcm, dtype="<i2")
    return samples.size, int(samples.astype(np.int64).sum())


@pytest.mark.parametrize(
    ("encoding", "resend"), [("pcm_s16le", "tail"), ("wav", "tail"), ("pcm_s16le", "all")]
)
async def test_a_killed_instances_listen_request_runs_again_on_the_requests_timeline(
    tmp_path: Path,
    stt: FakeStt,
    redis_url: str,
    utterances: list[bytes],
    encoding: str,
    resend: str,
) -> None:
    # resend "tail": from the last final transcript's end (docs/resume.md section 7);
    # "all": a client that kept everything resends from byte 0 (the run skips to there)
    a, b = await start(tmp_path, stt, redis_url)
    rid = f"l-{encoding}-{resend}"  # one Redis for the module: an id of its own per test
    header = wav_header(16000, 1) if encoding == "wav" else b""  # offsets count it
    audio = header + b"".join(utterances)
    second_at = len(header) + len(utterances[0])
    # into the second utterance's speech: A has seen it start, not end
    cut = second_at + len(utterances[1]) // 2 // CHUNK * CHUNK
    seen = Frames()
    listen = {
        "type": "listen",
        "request_id": rid,
        "format": {"encoding": encoding, "sample_rate": 16000, "channels": 1},
    }
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url(a))
            await ws.send_str(json.dumps(listen))
            await send(ws, rid, audio[:second_at])
            await seen.read(ws, until=lambda frames: any(f["type"] == "transcript" for f in frames))
            await send(ws, rid, audio[second_at:cut])
            await seen.read(
                ws,
                until=lambda frames: any(
                    f["type"] == "speech_started" and f["segment_id"] == 1 for f in frames
                ),
            )
            await recorded(redis_url, rid, seen.seq)
            await a.kill()
            killed_at = seen.seq
            [final] = seen.finals()
            # the unacknowledged tail starts at the last final's end
            acked = len(header) + final["end_ms"] * BYTES_PER_MS
            async with http.ws_connect(url(b)) as other:
                resume = {"type": "resume", "request_id": rid, "after_seq": seen.seq}
                await other.send_str(json.dumps(resume))
                start_at = acked if resend == "tail" else 0
                offset = {"type": "audio_offset", "request_id": rid, "offset": start_at}
                await other.send_str(json.dumps(offset))
                await send(other, rid, audio[start_at:])
                await other.send_str(json.dumps({"type": "end", "request_id": rid}))
                await seen.read(other)
            await ws.close()
    finally:
        for instance in (a, b):
            await instance.kill()

    done = seen.frames[-1]
    assert done["type"] == "done", done
    finals = seen.finals()
    # one final per utterance, segment ids on from A's, in order
    assert [f["segment_id"] for f in finals] == [0, 1, 2]
    # each final covers its utterance's speech, on the request's timeline
    starts = [0, len(utterances[0]), len(utterances[0]) + len(utterances[1])]
    for final, begin, spoken in zip(finals, starts, utterances, strict=True):
        begin_ms, end_ms = begin // BYTES_PER_MS, (begin + len(spoken)) // BYTES_PER_MS
        assert begin_ms <= final["start_ms"] < final["end_ms"] <= end_ms, (final, begin_ms)
        # the utterance's speech, all of it once (digital silence around it sums to 0)
        count, total = pcm_totals(final["text"])
        assert total == checksum(spoken)[1] and count <= len(spoken) // 2, final
    assert done["usage"]["segments"] == 3
    assert abs(done["usage"]["audio_ms"] - (len(audio) - len(header)) // BYTES_PER_MS) <= 1
    # B's run heard nothing before the acknowledged point again
    after = [f for f in seen.frames if f["seq"] > killed_at and "segment_id" in f]
    assert after and all(f["segment_id"] >= 1 for f in after)
    acked_ms = (acked - len(header)) // BYTES_PER_MS
    assert all(f.get("start_ms", acked_ms) >= acked_ms for f in after)


async def test_the_python_client_resumes_a_listen_request_whose_instance_was_killed(
    tmp_path: Path, stt: FakeStt, redis_url: str, utterances: list[bytes]
) -> None:
    # behind HAProxy: the client reconnects to whichever instance is left, resumes,
    # and resends the audio after its last final transcript behind `audio_offset`
    instances = await start(tmp_path, stt, redis_url)
    port_lb, port_stats = free_ports(2)
    balancer: Balancer | None = None
    rid = "l-client"
    heard_first, second_started = asyncio.Event(), asyncio.Event()
    first, second, third = utterances
    half = len(second) // 2 // CHUNK * CHUNK
    try:
        balancer = await start_balancer(tmp_path, instances, port_lb, port_stats)
        options = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.5), heartbeat=5.0)
        async with SluiceClient(balancer.url, options=options) as client:

            async def microphone() -> AsyncIterator[bytes]:
                for i in range(0, len(first), CHUNK):
                    yield first[i : i + CHUNK]
                await heard_first.wait()
                for i in range(0, half, CHUNK):
                    yield second[i : i + CHUNK]
                await second_started.wait()
                await recorded(redis_url, rid, 4)  # what the client saw is in the log
                victim = await serving(balancer, instances)
                await victim.kill()  # kill -9 in the middle of the second utterance
                rest = second[half:] + third
                for i in range(0, len(rest), CHUNK):
                    yield rest[i : i + CHUNK]

            events = []
            fmt = AudioFormat("pcm_s16le", 16000)
            async for event in client.listen("s", microphone(), format=fmt, request_id=rid):
                events.append(event)
                if isinstance(event, Transcript) and event.is_final:
                    heard_first.set()
                if isinstance(event, SpeechStarted) and event.frame["segment_id"] == 1:
                    second_started.set()
            stats = client.stats
    finally:
        if balancer is not None and balancer.proc.returncode is None:
            balancer.proc.terminate()
            await balancer.proc.wait()
        for instance in instances:
            await instance.kill()
    finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert [f.segment_id for f in finals] == [0, 1, 2]
    for final, spoken in zip(finals, utterances, strict=True):
        # every sample of each utterance's speech heard once, by one final transcript
        assert pcm_totals(final.text)[1] == checksum(spoken)[1], final
    assert stats.resumed == 1 and stats.lost == 0
