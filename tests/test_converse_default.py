"""A full spoken exchange on the embedded default config, no keys: espeak-ng speech
as the user's audio, heard by pocketsphinx, answered by SmolLM2 (llama.cpp), spoken
by espeak-ng, over a real websocket against a real server."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from config.loader import load_config
from tests.conftest import MakeClient
from tests.converse_helpers import (
    Conversation,
    read_conversation,
    send_audio,
    start_message,
    user_speech,
)

pytestmark = pytest.mark.slow

Client = TestClient[Any, Any]


async def test_a_spoken_exchange_on_the_embedded_default(sluice: MakeClient) -> None:
    client = await sluice(load_config(None))
    async with client.ws_connect("/v1/agent/default/converse") as ws:
        await ws.send_str(start_message("c1"))
        await send_audio(ws, "c1", user_speech("hello, what is the weather like today"))
        talk = await read_conversation(
            ws, Conversation(), "c1", until=lambda c: bool(c.of_type("turn_ended")), within=120
        )
        await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
        await read_conversation(ws, talk, "c1", within=60)
    kinds = [f["type"] for f in talk.frames]
    assert kinds[0] == "speech_started", kinds
    final = [f for f in talk.of_type("transcript") if f["is_final"]]
    assert final and final[0]["model_id"] == "local-pocketsphinx"
    turn = talk.of_type("user_turn")[0]
    assert turn["text"].strip(), "pocketsphinx heard nothing"
    reply = "".join(f["delta"] for f in talk.of_type("reply_text"))
    assert reply.strip() and {f["model_id"] for f in talk.of_type("reply_text")} == {
        "local-smollm2"
    }
    segments = [f["segment"] for f in talk.of_type("segment")]
    assert segments and {s["model_id"] for s in segments} == {"local-espeak"}
    ended = talk.of_type("turn_ended")[0]
    assert ended["reason"] == "complete", ended
    # the reply is real speech: 24 kHz PCM with energy, as long as its segments say
    samples = np.frombuffer(bytes(talk.audio), dtype="<i2")
    assert abs(samples.size / 24 - sum(s["audio_ms"] for s in segments)) <= len(segments)
    assert np.abs(samples).max() > 1000
    assert talk.frames[-1]["type"] == "done"
