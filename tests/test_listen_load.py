"""50 concurrent listen requests over one socket, each streamed in 20 ms frames and
transcribed by the embedded engine."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocol.messages import encode_binary
from server import build_app
from tests.listen_client import (
    check_event_order,
    collect,
    finals,
    listen_config,
    local_model,
    start,
)
from tests.speech_audio import silence, speech_16k, synthesize

SENTENCES = [
    "turn on the kitchen lights",
    "what is the weather tomorrow",
    "open the garage door",
    "read me the news",
    "stop the music",
    "call my sister on the phone",
    "how far is the airport",
    "add milk to the shopping list",
    "play some music in the living room",
]
REQUESTS = 50
FRAME_BYTES = 640  # 20 ms at 16 kHz


@pytest.mark.slow
async def test_fifty_concurrent_streams_on_one_socket_are_all_transcribed(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    spoken = {t: speech_16k(a) for t, a in synthesize(SENTENCES).items()}
    # the deadline from a segment's end to its final includes waiting for a free
    # decoder, and here 50 segments end within a second or two
    model = {**local_model(tmp_path, SENTENCES, workers=2), "client": {"first_chunk_timeout": 30}}
    config = listen_config([model])
    client = await aiohttp_client(build_app(config))
    streams = {}
    for i in range(REQUESTS):
        text = SENTENCES[i % len(SENTENCES)]
        lead = 100 + 20 * (i % 7)  # staggered, so segments do not all end at once
        audio = np.concatenate([silence(lead), spoken[text], silence(500)])
        streams[f"req-{i}"] = (text, audio.tobytes())

    cpu, wall = time.process_time(), time.perf_counter()
    async with client.ws_connect("/v1/speech/speech/listen", max_msg_size=0) as ws:
        for rid in streams:
            await start(ws, rid)
        longest = max(len(pcm) for _, pcm in streams.values())
        for offset in range(0, longest, FRAME_BYTES):  # one 20 ms frame per request per round
            for rid, (_, pcm) in streams.items():
                if offset < len(pcm):
                    await ws.send_bytes(encode_binary(rid, pcm[offset : offset + FRAME_BYTES]))
                elif offset < len(pcm) + FRAME_BYTES:
                    await ws.send_str(json.dumps({"type": "end", "request_id": rid}))
            await asyncio.sleep(0)
        for rid, (_, pcm) in streams.items():
            if len(pcm) + FRAME_BYTES > longest:
                await ws.send_str(json.dumps({"type": "end", "request_id": rid}))
        sent = time.perf_counter() - wall
        frames = await collect(ws, list(streams), within=50)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall

    audio_seconds = sum(len(pcm) for _, pcm in streams.values()) / 32000
    for rid, (text, pcm) in streams.items():
        got = frames[rid]
        check_event_order(got)
        assert [f["text"] for f in finals(got)] == [text], rid
        assert got[-1]["type"] == "done"
        assert got[-1]["usage"] == {"audio_ms": len(pcm) // 32, "segments": 1}
    print(
        f"\n{REQUESTS} streams, {audio_seconds:.1f} s of audio: "
        f"sent in {sent:.2f} s, wall {wall:.2f} s, "
        f"process CPU {cpu:.2f} s ({1000 * cpu / audio_seconds:.1f} ms CPU per audio second, "
        "client, server and decoders together)"
    )
