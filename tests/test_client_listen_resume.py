"""The Python client resumes a listen request whose socket was cut mid-stream.

A real Sluice (the embedded listen engine) on loopback, the real `sluice_client`:
the network drops after the first sentence was transcribed, while the second is
being sent. The client reconnects, sends `resume`, then the audio after the last
point the server reported (`audio_offset` first, so the server skips what it
already had) and `end`: every sentence is transcribed exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from sluice_client import AudioFormat, SluiceClient, Transcript

from tests.listen_client import collect, finals, listen_config, local_model, send_audio, start
from tests.test_client import FAST
from tests.test_listen_e2e import SENTENCES, lm_dir, spoken, utterances

__all__ = ["lm_dir", "spoken"]  # fixtures

CHUNK = 3200  # 100 ms of 16 kHz PCM16


async def test_a_cut_listen_request_resumes_and_each_sentence_is_heard_once(
    aiohttp_server: Any, spoken: dict[str, np.ndarray], lm_dir: Path
) -> None:
    from server import build_app

    texts = SENTENCES[:2]
    first_pcm, _ = utterances(spoken, texts[:1])
    second_pcm, _ = utterances(spoken, texts[1:], lead=0)
    first, second = first_pcm.tobytes(), second_pcm.tobytes()
    server = await aiohttp_server(
        build_app(listen_config([local_model(lm_dir, SENTENCES)])), host="127.0.0.1"
    )
    heard_first = asyncio.Event()
    options = dataclasses.replace(FAST, resume=True)
    async with SluiceClient(str(server.make_url("")).rstrip("/"), options=options) as client:

        def cut() -> None:
            conn = client.connection("/v1/speech/speech/listen")
            current = conn._current  # the socket the request is on
            assert current is not None
            sock = current.ws.get_extra_info("socket")
            assert sock is not None
            sock.shutdown(socket.SHUT_RDWR)  # the network drops: no close frame

        async def microphone() -> AsyncIterator[bytes]:
            for start in range(0, len(first), CHUNK):
                yield first[start : start + CHUNK]
            await heard_first.wait()
            half = len(second) // 2 // CHUNK * CHUNK
            for start in range(0, half, CHUNK):
                yield second[start : start + CHUNK]
            await asyncio.sleep(0)  # let the writer send them
            cut()
            for start in range(half, len(second), CHUNK):
                yield second[start : start + CHUNK]

        finals: list[str] = []
        fmt = AudioFormat("pcm_s16le", 16000)
        async for event in client.listen("speech", microphone(), format=fmt):
            if isinstance(event, Transcript) and event.is_final:
                finals.append(event.text)
                heard_first.set()
        stats = client.stats
    assert finals == texts
    assert stats.resumed == 1 and stats.lost == 0


def offset_msg(request_id: str, offset: int) -> str:
    return json.dumps({"type": "audio_offset", "request_id": request_id, "offset": offset})


async def test_audio_offset_skips_what_the_request_has_and_reports_a_gap(
    aiohttp_client: Any, spoken: dict[str, np.ndarray], lm_dir: Path
) -> None:
    from server import build_app

    texts = SENTENCES[:2]
    pcm_samples, _ = utterances(spoken, texts)
    pcm = pcm_samples.tobytes()
    client = await aiohttp_client(build_app(listen_config([local_model(lm_dir, SENTENCES)])))
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        await start(ws, "o1")
        half = len(pcm) // 2 // 2 * 2
        await send_audio(ws, "o1", pcm[:half], chunk=3200)
        # a resend from 1 s back: the request already has those bytes and skips them
        await ws.send_str(
            json.dumps({"type": "audio_offset", "request_id": "o1", "offset": half - 32000})
        )
        await ws.send_str(json.dumps({"type": "audio_offset", "request_id": "o1", "offset": -1}))
        await send_audio(ws, "o1", pcm[half - 32000 :], chunk=3200)
        await ws.send_str(json.dumps({"type": "end", "request_id": "o1"}))
        frames = (await collect(ws, ["o1"]))["o1"]
        # an offset past what a request has: a gap, reported, and the audio goes on
        await start(ws, "o2")
        await ws.send_str(offset_msg("o2", 640))
        await send_audio(ws, "o2", pcm, chunk=3200)
        await ws.send_str(json.dumps({"type": "end", "request_id": "o2"}))
        gapped = (await collect(ws, ["o2"]))["o2"]
    assert [f["text"] for f in finals(frames)] == texts  # nothing heard twice
    assert abs(frames[-1]["usage"]["audio_ms"] - len(pcm) // 32) <= 1
    errors = [f["error"] for f in frames if f["type"] == "error"]
    assert [e["name"] for e in errors[:1]] == ["invalid_request"]  # offset -1
    assert "finish_reason" not in errors[0]
    [gap] = [
        f["error"] for f in gapped if f["type"] == "error" and "finish_reason" not in f["error"]
    ]
    assert gap["name"] == "resume_gap"
    assert gapped[-1]["type"] == "done"
