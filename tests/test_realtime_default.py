"""The Realtime API on the embedded default config, no keys: the `openai` package's
realtime client sends espeak-ng speech, pocketsphinx hears it, SmolLM2 answers and
espeak-ng speaks the answer back as `response.output_audio.delta` events."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from audio.resample import resample
from config.loader import load_config
from tests.conftest import MakeClient
from tests.converse_helpers import user_speech
from tests.realtime_helpers import GA, Events, append, audio_of, of_type, sdk

pytestmark = pytest.mark.slow

Client = TestClient[Any, Any]


async def test_a_spoken_exchange_over_realtime_on_the_embedded_default(
    sluice: MakeClient,
) -> None:
    client = await sluice(load_config(None))
    speech = np.frombuffer(user_speech("hello, what is the weather like today"), dtype="<i2")
    events = Events(GA)
    async with sdk(client).realtime.connect(model="default") as connection:
        await events.read(connection, of_type("session.created"))
        await append(connection, resample(speech, 16000, 24000).astype("<i2").tobytes())
        done = await events.read(connection, of_type("response.done"), within=120)
    heard = events.of("conversation.item.input_audio_transcription.completed")
    assert heard and heard[0]["transcript"].strip(), "pocketsphinx heard nothing"
    assert done["response"]["status"] == "completed", done
    transcript = "".join(e["delta"] for e in events.of("response.output_audio_transcript.delta"))
    assert transcript.strip()
    samples = np.frombuffer(audio_of(events), dtype="<i2")
    assert samples.size > 24000 // 2  # at least half a second of speech at 24 kHz
    assert np.abs(samples).max() > 1000
