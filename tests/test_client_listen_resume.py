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
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from sluice_client import AudioFormat, SluiceClient, Transcript

from tests.listen_client import listen_config, local_model
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
