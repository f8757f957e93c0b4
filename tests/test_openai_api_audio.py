"""`POST /v1/audio/speech` and `/v1/audio/transcriptions` with the official `openai` SDK,
on the embedded engines (espeak-ng speaks, pocketsphinx with an in-domain language
model listens), through the speech router's own speak and listen pipelines."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import soundfile as sf

from config.models import SluiceConfig
from tests.listen_client import local_model as local_listen_model
from tests.openai_sdk import Client, MakeClient, openai_app_factory, sdk
from tests.speak_helpers import decode
from tests.speech_audio import ESPEAK_RATE, silence, synthesize

SENTENCES = [
    "turn on the kitchen lights",
    "what is the weather tomorrow",
    "open the garage door",
    "read me the news",
]

pytestmark = pytest.mark.slow


@pytest.fixture
def sluice(aiohttp_client: Any) -> MakeClient:
    return openai_app_factory(aiohttp_client)


@pytest.fixture(scope="module")
def spoken() -> dict[str, np.ndarray]:
    return synthesize(SENTENCES)


def speech_config(lm_dir: Path) -> SluiceConfig:
    return SluiceConfig.model_validate(
        {
            "routers": {
                "speech": [
                    {
                        "id": "default",
                        "speak": {"models": [{"id": "local", "local": {"voice": "en-us"}}]},
                        "listen": {"models": [local_listen_model(lm_dir, SENTENCES)]},
                    }
                ]
            }
        }
    )


@pytest.fixture
async def client(sluice: MakeClient, tmp_path: Path) -> Client:
    return await sluice(speech_config(tmp_path))


def recording(spoken: dict[str, np.ndarray], texts: list[str], fmt: str) -> bytes:
    """`texts` spoken one after another with pauses, as a `fmt` file at 22050 Hz."""
    gap = silence(700, ESPEAK_RATE)
    audio = np.concatenate([gap, *(np.concatenate([spoken[t], gap]) for t in texts)])
    out = io.BytesIO()
    sf.write(out, audio, ESPEAK_RATE, format=fmt, subtype="PCM_16")
    return out.getvalue()


@pytest.mark.parametrize(
    ("response_format", "content_type"),
    [("wav", "audio/wav"), ("flac", "audio/flac"), ("mp3", "audio/mpeg"), ("opus", "audio/ogg")],
)
async def test_speech_streams_decodable_audio(
    client: Client, response_format: str, content_type: str
) -> None:
    async with (
        sdk(client) as oai,
        oai.audio.speech.with_streaming_response.create(
            model="default",
            voice="alloy",  # an OpenAI voice: the local engine keeps its own
            input="Hello from Sluice. This is the second sentence.",
            response_format=response_format,  # type: ignore[arg-type]
        ) as response,
    ):
        assert response.headers["content-type"] == content_type
        data = await response.read()
    samples, rate, channels = decode(data)
    assert (rate, channels) == (24000, 1)
    assert samples.size / rate > 1.0
    assert np.abs(samples).max() > 1000


async def test_speech_pcm_is_raw_24k_samples(client: Client) -> None:
    async with sdk(client) as oai:
        response = await oai.audio.speech.create(
            model="default", voice="en-us", input="Raw samples, please.", response_format="pcm"
        )
    data = response.content
    assert response.response.headers["content-type"] == "audio/pcm"
    assert len(data) % 2 == 0
    samples = np.frombuffer(data, dtype="<i2")
    assert samples.size / 24000 > 0.5


async def test_speech_errors(client: Client) -> None:
    async with sdk(client) as oai:
        with pytest.raises(openai.NotFoundError) as raised:
            await oai.audio.speech.create(model="nope", voice="alloy", input="Hi")
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError) as raised_bad:
            await oai.audio.speech.create(
                model="default", voice="alloy", input="Hi", response_format="aac"
            )
        assert isinstance(raised_bad.value.body, dict)
        assert raised_bad.value.body["param"] == "response_format"
        with pytest.raises(openai.BadRequestError):
            await oai.audio.speech.create(model="default", voice="no-such-voice", input="Hi")


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
async def test_transcription_of_known_speech(
    client: Client, spoken: dict[str, np.ndarray], fmt: str
) -> None:
    texts = ["turn on the kitchen lights", "open the garage door"]
    audio = recording(spoken, texts, fmt)
    async with sdk(client) as oai:
        result = await oai.audio.transcriptions.create(
            file=(f"speech.{fmt.lower()}", audio), model="default", language="en"
        )
    words = result.text.split()
    for word in ("kitchen", "lights", "garage", "door"):
        assert word in words, result.text
    assert result.text.index("kitchen") < result.text.index("garage")


async def test_transcription_as_text(client: Client, spoken: dict[str, np.ndarray]) -> None:
    audio = recording(spoken, ["read me the news"], "WAV")
    async with sdk(client) as oai:
        text = await oai.audio.transcriptions.create(
            file=("speech.wav", audio), model="default", response_format="text"
        )
    assert "news" in str(text)


async def test_transcription_errors(client: Client) -> None:
    async with sdk(client) as oai:
        with pytest.raises(openai.NotFoundError):
            await oai.audio.transcriptions.create(file=("a.wav", b"RIFF0000WAVE"), model="nope")
        with pytest.raises(openai.BadRequestError) as raised:
            await oai.audio.transcriptions.create(file=("a.txt", b"hello"), model="default")
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["code"] == "unsupported_format"
        with pytest.raises(openai.BadRequestError) as raised:
            await oai.audio.transcriptions.create(
                file=("a.wav", b"RIFF\x00\x00\x00\x00WAVEjunk"), model="default"
            )
        with pytest.raises(openai.BadRequestError):
            await oai.audio.transcriptions.create(
                file=("a.wav", b"RIFF0000WAVE"), model="default", response_format="srt"
            )
