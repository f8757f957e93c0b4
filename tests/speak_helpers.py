"""Helpers for the speak tests: configs, a websocket reader that applies drops, decoding."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
from aiohttp import ClientWebSocketResponse, WSMsgType

from config.models import SluiceConfig

FAST_CLIENT = {"first_chunk_timeout": "1s", "idle_timeout": "1s", "timeout": "5s"}
FAST_RETRY = {"max_retries": 0, "min_delay": "50ms", "max_delay": "100ms", "jitter": 0}


def speak_config(
    *models: dict[str, Any],
    router_id: str = "s",
    limits: dict[str, Any] | None = None,
    **speak: Any,
) -> SluiceConfig:
    """A config with one speech router `router_id` whose speak section has `models`."""
    return SluiceConfig.model_validate(
        {
            "limits": limits or {},
            "routers": {
                "speech": [
                    {
                        "id": router_id,
                        "retry": FAST_RETRY,
                        "speak": {"models": list(models), **speak},
                    }
                ]
            },
        }
    )


def local_model(model_id: str = "local", **extra: Any) -> dict[str, Any]:
    """The embedded espeak-ng model."""
    return {"id": model_id, "local": {}, **extra}


def speak(request_id: str, text: str | None = None, **extra: Any) -> str:
    """A `speak` message."""
    body: dict[str, Any] = {"type": "speak", "request_id": request_id, **extra}
    if text is not None:
        body["text"] = text
    return json.dumps(body)


def text_msg(request_id: str, text: str, final: bool = False) -> str:
    """A `text` message."""
    return json.dumps({"type": "text", "request_id": request_id, "text": text, "final": final})


@dataclass
class SpeakResult:
    """What one request received: its JSON frames, audio as sent, audio kept after drops."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)
    kept: bytearray = field(default_factory=bytearray)
    audio_frames: int = 0

    @property
    def terminal(self) -> dict[str, Any]:
        """The last (terminal) frame."""
        return self.frames[-1]

    @property
    def segments(self) -> list[dict[str, Any]]:
        """The `segment` payloads in arrival order."""
        return [f["segment"] for f in self.frames if f["type"] == "segment"]

    def errors(self, name: str) -> list[dict[str, Any]]:
        """The `error` payloads named `name`."""
        return [
            f["error"] for f in self.frames if f["type"] == "error" and f["error"]["name"] == name
        ]


def is_speak_terminal(frame: dict[str, Any]) -> bool:
    """A frame that ends its request: `done`, or an error with a finish_reason."""
    if "finish_reason" in frame:
        return True
    return frame["type"] == "error" and "finish_reason" in frame["error"]


def split_binary(data: bytes) -> tuple[str, bytes]:
    """A binary frame -> (request id, audio)."""
    size = data[0]
    return data[1 : 1 + size].decode(), data[1 + size :]


async def read_speak(
    ws: ClientWebSocketResponse, count: int, within: float = 10.0
) -> dict[str | None, SpeakResult]:
    """Read until `count` requests ended; applies `model_unavailable` drops to `kept`.

    Fails on a frame (JSON or audio) for a request after its terminal frame.
    """
    results: dict[str | None, SpeakResult] = {}
    ended: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while len(ended) < count:
        msg = await asyncio.wait_for(ws.receive(), max(0.01, deadline - loop.time()))
        if msg.type is WSMsgType.BINARY:
            rid, audio = split_binary(msg.data)
            assert rid not in ended, f"audio after the terminal frame of {rid}"
            result = results.setdefault(rid, SpeakResult())
            result.received += audio
            result.kept += audio
            result.audio_frames += 1
            continue
        assert msg.type is WSMsgType.TEXT, f"unexpected {msg.type}: {msg.data!r}"
        frame = json.loads(msg.data)
        rid = frame["request_id"]
        assert rid not in ended, f"frame after the terminal frame: {frame}"
        result = results.setdefault(rid, SpeakResult())
        result.frames.append(frame)
        if frame["type"] == "error" and frame["error"]["name"] == "model_unavailable":
            drop = frame["error"]["drop_bytes"]
            if drop:
                del result.kept[-drop:]
        if rid is not None and is_speak_terminal(frame):
            ended.add(rid)
    return results


def decode(data: bytes) -> tuple[np.ndarray[Any, np.dtype[np.int16]], int, int]:
    """Decode any of our formats with libsndfile -> (int16 samples, rate, channels).

    Reads with `sf_readf_short` to the end of the data: a streamed FLAC says
    "total samples unknown", which soundfile's read() cannot size an array for.
    """
    from soundfile import _ffi, _snd

    with sf.SoundFile(io.BytesIO(data)) as f:
        channels = f.channels
        buffer = _ffi.new("short[]", 4096 * channels)
        parts = []
        while True:
            frames = _snd.sf_readf_short(f._file, buffer, 4096)
            if frames <= 0:
                break
            raw = _ffi.buffer(buffer, frames * 2 * channels)
            parts.append(np.frombuffer(raw, dtype=np.int16).copy())
        rate = f.samplerate
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    return samples, rate, channels


def rms(samples: np.ndarray[Any, np.dtype[np.int16]]) -> float:
    """Root mean square of int16 samples."""
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0
