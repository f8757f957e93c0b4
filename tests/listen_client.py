"""Test helper: drive the listen websocket like a client and check the terminal rule."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import ClientWebSocketResponse, WSMsgType

from config.models import SluiceConfig
from protocol.messages import encode_binary
from tests.speech_audio import build_dict, build_lm

FAST_RETRY = {"max_retries": 0, "min_delay": "10ms", "max_delay": "10ms", "jitter": 0}
FAST_CLIENT = {"first_chunk_timeout": "2s", "idle_timeout": "2s", "timeout": "10s"}


def listen_config(
    models: Sequence[dict[str, Any]],
    *,
    vad: dict[str, Any] | None = None,
    max_audio_seconds: float = 3600,
    retry: dict[str, Any] | None = None,
    router_id: str = "speech",
) -> SluiceConfig:
    """A config with one speech router that only listens."""
    listen: dict[str, Any] = {"models": list(models), "max_audio_seconds": max_audio_seconds}
    if vad is not None:
        listen["vad"] = vad
    return SluiceConfig.model_validate(
        {"routers": {"speech": [{"id": router_id, "retry": retry or FAST_RETRY, "listen": listen}]}}
    )


def local_model(lm_dir: Path, sentences: Sequence[str], **extra: Any) -> dict[str, Any]:
    """The embedded engine with an in-domain language model of `sentences`."""
    return {
        "id": "local",
        "client": FAST_CLIENT,
        "local": {
            "lm_path": build_lm(sentences, lm_dir),
            "dict_path": build_dict(sentences, lm_dir),
            **extra,
        },
    }


def is_terminal(frame: dict[str, Any]) -> bool:
    """A frame that ends its request: `done`, or an error with a finish_reason."""
    if frame["type"] == "done":
        return "finish_reason" in frame
    if frame["type"] == "error":
        return "finish_reason" in frame["error"]
    return False


async def send_audio(
    ws: ClientWebSocketResponse,
    request_id: str,
    pcm: bytes,
    chunk: int = 640,
    pace: float = 0.0,
) -> None:
    """Stream `pcm` as binary frames of `chunk` bytes (sleeping `pace` s between them)."""
    for i in range(0, len(pcm), chunk):
        await ws.send_bytes(encode_binary(request_id, pcm[i : i + chunk]))
        if pace:
            await asyncio.sleep(pace)


async def start(
    ws: ClientWebSocketResponse, request_id: str, rate: int = 16000, channels: int = 1, **extra: Any
) -> None:
    """Send `listen` for raw PCM."""
    body = {
        "type": "listen",
        "request_id": request_id,
        "format": {"encoding": "pcm_s16le", "sample_rate": rate, "channels": channels},
        **extra,
    }
    await ws.send_str(json.dumps(body))


async def receive(ws: ClientWebSocketResponse, within: float) -> dict[str, Any]:
    """The next text frame as JSON."""
    msg = await asyncio.wait_for(ws.receive(), within)
    assert msg.type is WSMsgType.TEXT, f"expected a text frame, got {msg.type}: {msg.data!r}"
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def collect(
    ws: ClientWebSocketResponse,
    request_ids: Sequence[str],
    within: float = 20.0,
    stamps: dict[int, float] | None = None,
) -> dict[str | None, list[dict[str, Any]]]:
    """Frames by request id until every id in `request_ids` ended; other frames kept too.

    Asserts the terminal rule: nothing follows a request's terminal frame, and each
    request has exactly one. `stamps` (if given) gets the loop time each frame arrived,
    keyed by `id(frame)`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    by_id: dict[str | None, list[dict[str, Any]]] = {}
    ended: set[str] = set()
    wanted = set(request_ids)
    while not wanted <= ended:
        frame = await receive(ws, max(0.01, deadline - loop.time()))
        if stamps is not None:
            stamps[id(frame)] = loop.time()
        rid = frame["request_id"]
        assert rid not in ended, f"a frame after the terminal frame: {frame}"
        by_id.setdefault(rid, []).append(frame)
        if rid is not None and is_terminal(frame):
            ended.add(rid)
    return by_id


def finals(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The final transcript frames, in arrival order."""
    return [f for f in frames if f["type"] == "transcript" and f["is_final"]]


def check_event_order(frames: list[dict[str, Any]]) -> None:
    """Per segment: started < ended < its one final; finals in segment order; done last."""
    position: dict[tuple[str, int], int] = {}
    for index, frame in enumerate(frames):
        if frame["type"] in ("speech_started", "speech_ended"):
            key = (frame["type"], frame["segment_id"])
            assert key not in position, f"duplicate {key}"
            position[key] = index
        elif frame["type"] == "transcript" and frame["is_final"]:
            key = ("final", frame["segment_id"])
            assert key not in position, f"two finals for segment {frame['segment_id']}"
            position[key] = index
    segments = sorted({k[1] for k in position})
    assert segments == list(range(len(segments)))
    for seg in segments:
        assert position[("speech_started", seg)] < position[("speech_ended", seg)]
        assert position[("speech_ended", seg)] < position[("final", seg)]
    final_ids = [f["segment_id"] for f in finals(frames)]
    assert final_ids == sorted(final_ids)
    assert is_terminal(frames[-1])


def interleave_stereo(mono: np.ndarray) -> np.ndarray:
    """The same signal on both channels, interleaved."""
    return np.column_stack([mono, mono]).reshape(-1)
