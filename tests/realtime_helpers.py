"""Helpers of the Realtime tests: the `openai` package's server event models by type
(GA and beta), a reader that checks every event against them, audio to append."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin

import numpy as np
from aiohttp.test_utils import TestClient
from openai import AsyncOpenAI
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel

from audio.resample import resample
from tests.converse_helpers import user_speech

Client = TestClient[Any, Any]


def by_type(union: Any) -> dict[str, type[BaseModel]]:
    """The models of a discriminated union of events, by their `type` literal."""
    while get_origin(union) is Annotated:
        union = get_args(union)[0]
    models: dict[str, type[BaseModel]] = {}
    for model in get_args(union):
        for literal in get_args(model.model_fields["type"].annotation):
            models[literal] = model
    return models


GA = by_type(RealtimeServerEvent)
BETA = by_type(BetaServerEvent)


def sdk(client: Client) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="sk-anything")


class Events:
    """What a client read: every server event (validated), in order."""

    def __init__(self, models: dict[str, Any]) -> None:
        self.models = models
        self.all: list[dict[str, Any]] = []

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.all if e["type"] == kind]

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.all]

    async def read(
        self, connection: Any, until: Callable[[dict[str, Any]], bool], within: float = 20.0
    ) -> dict[str, Any]:
        """Read events until one satisfies `until` (returned)."""
        while True:
            raw = await asyncio.wait_for(connection.recv_bytes(), within)
            event = json.loads(raw)
            model = self.models[event["type"]]
            parsed = model.model_validate(event)
            assert set(event) <= set(type(parsed).model_fields), event
            # the SDK's own parser takes it too
            assert connection.parse_event(raw).type == event["type"]
            self.all.append(event)
            if until(event):
                return event


def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["type"] == kind


def speech_24k() -> bytes:
    pcm = np.frombuffer(user_speech(), dtype="<i2")
    return resample(pcm, 16000, 24000).astype("<i2").tobytes()


async def append(connection: Any, audio: bytes, chunk: int = 4800) -> None:
    for i in range(0, len(audio), chunk):
        piece = base64.b64encode(audio[i : i + chunk]).decode()
        await connection.input_audio_buffer.append(audio=piece)


def audio_of(events: Events, name: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events.of(name))
