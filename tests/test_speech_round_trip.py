"""Every format Sluice writes, it reads: speak's output goes back in through listen and
through `POST /v1/audio/transcriptions`, on the embedded engines (espeak-ng speaks,
pocketsphinx with an in-domain language model listens), and the words come back.

pocketsphinx is imperfect on espeak's voice, so words are compared loosely: most
of the sentence's words, in order, with nothing outside the sentence's vocabulary.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from audio.pcm import wav_bytes
from config.models import SluiceConfig
from protocol.messages import encode_binary
from server import build_app
from tests.listen_client import collect, finals, local_model, start
from tests.speak_helpers import read_speak, speak

SENTENCES = ["turn on the kitchen lights", "open the garage door"]
TEXT = "Turn on the kitchen lights. Open the garage door."
RATE = 24000
# speak's encodings -> the listen encoding that reads them back
FORMATS = {
    "pcm_s16le": "pcm_s16le",
    "wav": "wav",
    "mp3": "mp3",
    "ogg_opus": "ogg_opus",
    "flac": "flac",
}

pytestmark = pytest.mark.slow

Client = TestClient[Any, Any]


def config(lm_dir: Path) -> SluiceConfig:
    """One speech router: espeak-ng speaks, pocketsphinx (in-domain LM) listens, with
    a VAD hangover long enough to keep each sentence whole."""
    return SluiceConfig.model_validate(
        {
            "routers": {
                "speech": [
                    {
                        "id": "default",
                        "speak": {"models": [{"id": "espeak", "local": {"voice": "en-us"}}]},
                        "listen": {
                            "vad": {"hangover": "300ms"},
                            "models": [local_model(lm_dir, SENTENCES)],
                        },
                    }
                ]
            }
        }
    )


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Client:
    made: Client = await aiohttp_client(build_app(config(tmp_path)))
    return made


def assert_heard(text: str) -> None:
    """Most words of both sentences, in order, and only words they contain."""
    heard = text.lower().split()
    vocabulary = {w for s in SENTENCES for w in s.split()}
    assert set(heard) <= vocabulary, text
    for sentence in SENTENCES:
        words = sentence.split()
        assert sum(w in heard for w in words) >= len(words) - 1, (sentence, text)
    assert "kitchen" in heard and "garage" in heard, text
    assert heard.index("kitchen") < heard.index("garage"), text


async def spoken(client: Client, encoding: str) -> bytes:
    """TEXT spoken by the speak endpoint in `encoding` at 24 kHz: the audio bytes."""
    async with client.ws_connect("/v1/speech/default/speak") as ws:
        fmt = {"encoding": encoding, "sample_rate": RATE}
        await ws.send_str(speak("s1", TEXT, final=True, format=fmt))
        received = await read_speak(ws, 1, within=30)
    result = received["s1"]
    assert result.frames[-1]["type"] == "done", result.frames[-1]
    return bytes(result.kept)


async def listened(client: Client, encoding: str, audio: bytes) -> str:
    """`audio` sent to the listen endpoint as `encoding`: the final transcripts joined."""
    async with client.ws_connect("/v1/speech/default/listen") as ws:
        if encoding == "pcm_s16le":
            await start(ws, "l1", rate=RATE)
        else:
            await ws.send_str(
                json.dumps({"type": "listen", "request_id": "l1", "format": {"encoding": encoding}})
            )
        for i in range(0, len(audio), 8192):
            await ws.send_bytes(encode_binary("l1", audio[i : i + 8192]))
        await ws.send_str(json.dumps({"type": "end", "request_id": "l1"}))
        frames = (await collect(ws, ["l1"], within=40))["l1"]
    assert frames[-1]["type"] == "done", frames[-1]
    return " ".join(f["text"] for f in finals(frames))


async def transcribed(client: Client, encoding: str, audio: bytes) -> str:
    """`audio` posted to `/v1/audio/transcriptions` (raw PCM wrapped in a WAV header,
    since a file needs one): the text."""
    if encoding == "pcm_s16le":
        audio = wav_bytes(audio, RATE)
    form = aiohttp.FormData()
    form.add_field("model", "default")
    form.add_field("file", audio, filename="speech", content_type="application/octet-stream")
    response = await client.post("/v1/audio/transcriptions", data=form)
    body = await response.json()
    assert response.status == 200, body
    text: str = body["text"]
    return text


@pytest.mark.parametrize("encoding", list(FORMATS))
async def test_speak_output_round_trips_through_listen_and_transcriptions(
    client: Client, encoding: str
) -> None:
    audio = await spoken(client, encoding)
    assert len(audio) > 1000
    via_listen, via_http = await asyncio.gather(
        listened(client, FORMATS[encoding], audio), transcribed(client, encoding, audio)
    )
    assert_heard(via_listen)
    assert_heard(via_http)


async def test_interim_transcripts_arrive_from_the_local_engine(client: Client) -> None:
    """interim_results on pocketsphinx: partial decodes arrive while the segment is
    still being spoken, before its final."""
    pcm = await spoken(client, "pcm_s16le")
    samples = np.frombuffer(pcm, dtype="<i2")
    lead = np.zeros(RATE // 4, dtype=np.int16).tobytes()
    first = lead + samples[: int(RATE * 1.4)].tobytes()
    async with client.ws_connect("/v1/speech/default/listen") as ws:
        await start(ws, "i1", rate=RATE, interim_results=True)
        await ws.send_bytes(encode_binary("i1", first))
        interim: dict[str, Any] | None = None
        while interim is None:
            msg = await asyncio.wait_for(ws.receive_json(), 30)
            assert msg["type"] in ("speech_started", "transcript"), msg
            if msg["type"] == "transcript":
                assert not msg["is_final"], "a final arrived before any interim"
                interim = msg
        await ws.send_bytes(encode_binary("i1", samples[int(RATE * 1.4) :].tobytes()))
        await ws.send_str(json.dumps({"type": "end", "request_id": "i1"}))
        frames = (await collect(ws, ["i1"], within=40))["i1"]
    assert interim["segment_id"] == 0 and interim["text"].split()[0] == "turn", interim
    assert_heard(" ".join(f["text"] for f in finals(frames)))
