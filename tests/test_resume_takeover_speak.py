"""Speak takeovers beyond raw audio: compressed formats and streamed text.

Real `sluice serve` processes share a real redis-server; the instance running a
speak request is killed (-9) mid-answer and the client resumes on another one.

- flac, ogg_opus, mp3: the gone encoder's stream cannot be continued, so the new
  owner restarts the audio (a `model_unavailable` dropping every byte the client
  has, then the whole text again in one new stream). What the client keeps is
  decoded with libsndfile: one whole stream, every sentence's audio once.
- A request whose text streams in `text` messages: the text received so far was
  noted in the log as it came; the new owner speaks on from the first unspoken
  sentence and takes the rest of the text from the client on the new socket.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from fakes.tts_servers import FakeSpeechServer, tone
from tests.speak_helpers import decode
from tests.test_resume_speak import (
    RATE,
    SENTENCES,
    Listener,
    recorded,
    redis_url,  # noqa: F401 (fixture)
    start,
    url,
    voice,  # noqa: F401 (fixture)
)


def two_segments(listener: Listener) -> bool:
    """Two sentences spoken whole (a compressed format sends a sentence's audio with
    its `segment` event: there is no partial audio to wait for)."""
    return len(listener.segments()) == 2


def pcm(sentences: list[str]) -> np.ndarray:
    """The fake's audio for `sentences`, back to back, as int16 samples."""
    return np.frombuffer(b"".join(tone(s, RATE, 10.0) for s in sentences), dtype="<i2")


@pytest.mark.parametrize("encoding", ["flac", "ogg_opus", "mp3"])
async def test_a_compressed_speak_request_taken_over_restarts_into_one_stream_that_decodes(
    tmp_path: Path,
    voice: FakeSpeechServer,  # noqa: F811
    redis_url: str,  # noqa: F811
    encoding: str,
) -> None:
    a, b = await start(tmp_path, voice, redis_url)
    rid = f"c-{encoding}"  # one Redis for the module: an id of its own per test
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
            await listener.read(ws, until=two_segments)
            await recorded(redis_url, rid, listener.seq)
            received = len(listener.kept)
            await a.kill()
            seen = listener.seq
            async with http.ws_connect(url(b)) as other:
                resume = {"type": "resume", "request_id": rid, "after_seq": seen}
                await other.send_str(json.dumps(resume))
                await listener.read(other)
            await ws.close()
    finally:
        for instance in (a, b):
            await instance.kill()

    assert received > 0
    done = listener.frames[-1]
    assert done["type"] == "done", done
    # the first new frame drops every audio byte the client had
    notice = listener.frames[len([f for f in listener.frames if f["seq"] <= seen])]
    assert notice["seq"] == seen + 1
    assert notice["error"]["name"] == "model_unavailable", notice
    assert notice["error"]["segment_id"] == 0 and notice["error"]["drop_bytes"] == received
    # then every sentence again, in order, in one new stream
    after = [f["segment"] for f in listener.frames if f["type"] == "segment" and f["seq"] > seen]
    assert [s["text"] for s in after] == SENTENCES
    assert done["segments"] == len(SENTENCES)
    assert done["usage"]["characters"] == len(text)
    samples, rate, channels = decode(bytes(listener.kept))
    assert (rate, channels) == (RATE, 1)
    expected = pcm(SENTENCES)
    if encoding == "flac":  # lossless: every sample
        assert np.array_equal(samples, expected)
    else:  # lossy: the whole duration (an mp3 adds its encoder's padding), the tone
        assert len(expected) <= len(samples) <= len(expected) + RATE // 10
        level = np.sqrt(np.mean(samples.astype(np.float64) ** 2))
        assert 0.8 * 8000 / np.sqrt(2) < level < 1.2 * 8000 / np.sqrt(2)
    assert voice.stats.texts.count(SENTENCES[0]) == 2  # spoken again from the start


async def test_a_speak_request_with_streamed_text_is_taken_over_and_takes_more_text(
    tmp_path: Path,
    voice: FakeSpeechServer,  # noqa: F811
    redis_url: str,  # noqa: F811
) -> None:
    a, b = await start(tmp_path, voice, redis_url)
    listener = Listener()
    pieces = [SENTENCES[0]] + [" " + s for s in SENTENCES[1:]]
    speak = {
        "type": "speak",
        "request_id": "t1",
        "format": {"encoding": "pcm_s16le", "sample_rate": RATE},
    }

    def text(piece: str, final: bool = False) -> str:
        return json.dumps({"type": "text", "request_id": "t1", "text": piece, "final": final})

    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url(a))
            await ws.send_str(json.dumps(speak))
            for piece in pieces[:3]:  # the first three sentences reach A
                await ws.send_str(text(piece))
            await listener.read(ws, until=lambda seen: len(seen.segments()) == 2)
            await recorded(redis_url, "t1", listener.seq)
            await a.kill()
            seen = listener.seq
            async with http.ws_connect(url(b)) as other:
                resume = {"type": "resume", "request_id": "t1", "after_seq": seen}
                await other.send_str(json.dumps(resume))
                # the rest of the text, right behind the resume (B takes the request
                # over once A's lease expires, then hears it)
                await other.send_str(text(pieces[3]))
                await other.send_str(text(pieces[4], final=True))
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
    assert bytes(listener.kept) == b"".join(tone(s, RATE, 10.0) for s in SENTENCES)
    assert done["usage"]["characters"] == len("".join(pieces))
    assert not [f for f in listener.frames if f["type"] == "error" and f["seq"] > seen + 1]
    spoken = voice.stats.texts
    assert spoken.count(SENTENCES[0]) == 1 and spoken.count(SENTENCES[1]) == 1
    assert spoken.count(SENTENCES[4]) == 1
