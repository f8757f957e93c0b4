"""Test helpers for the converse endpoint: configs over fakes, the user's speech, a reader.

`agent_config(...)` builds one agent router over a fake STT (OpenAI transcriptions),
a fake chat (OpenAI) and a fake TTS (OpenAI speech); `user_speech()` is real
speech made by espeak-ng at 16 kHz (so webrtcvad hears it), cached per process;
`read_conversation(ws, rid)` reads a conversation's frames and reply audio until
a predicate holds or the terminal frame.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from aiohttp import ClientWebSocketResponse, WSMsgType

from config.models import SluiceConfig
from protocol.messages import encode_binary
from tests.speak_helpers import split_binary
from tests.speech_audio import silence, speech_16k, synthesize

FAST = {"first_chunk_timeout": "2s", "idle_timeout": "2s", "timeout": "10s"}
NO_RETRY = {"max_retries": 0, "min_delay": "50ms", "max_delay": "100ms", "jitter": 0}


def stt_model(model_id: str, url: str) -> dict[str, Any]:
    """A listen model on the fake OpenAI transcription server at `url`."""
    return {"id": model_id, "client": FAST, "openai": {"base_url": url, "api_key": "sk-stt"}}


def tts_model(model_id: str, url: str) -> dict[str, Any]:
    """A speak model on the fake OpenAI speech server at `url`."""
    return {
        "id": model_id,
        "client": FAST,
        "openai": {"base_url": url, "model": "tts-fake", "api_key": "sk-tts"},
    }


def chat_model(model_id: str, url: str) -> dict[str, Any]:
    """A language model on the fake OpenAI chat server at `url`."""
    return {
        "id": model_id,
        "client": FAST,
        "openai": {"base_url": url, "model": f"gpt-{model_id}", "api_key": "sk-chat"},
    }


def agent_config(
    listen: list[dict[str, Any]],
    chat: list[dict[str, Any]],
    speak: list[dict[str, Any]],
    **agent: Any,
) -> SluiceConfig:
    """One agent router "talk" over speech router "sp" and language router "lm"."""
    return SluiceConfig.model_validate(
        {
            "routers": {
                "language": [
                    {"id": "lm", "retry": NO_RETRY, "mid_stream": "restart", "models": chat}
                ],
                "speech": [
                    {
                        "id": "sp",
                        "retry": NO_RETRY,
                        "speak": {"models": speak},
                        "listen": {"vad": {"hangover": "300ms"}, "models": listen},
                    }
                ],
                "agent": [{"id": "talk", "listen": "sp", "chat": "lm", "speak": "sp", **agent}],
            }
        }
    )


@cache
def _speech(text: str) -> bytes:
    samples = speech_16k(synthesize([text])[text])
    return np.concatenate([silence(200), samples, silence(700)]).astype("<i2").tobytes()


def user_speech(text: str = "what time is it") -> bytes:
    """`text` spoken by espeak-ng, PCM16 mono 16 kHz, with silence before and after
    (long enough for the VAD's hangover to end the turn)."""
    return _speech(text)


def start_message(rid: str, **extra: Any) -> str:
    """A `converse` message with 16 kHz PCM in and 24 kHz PCM out."""
    body = {
        "type": "converse",
        "request_id": rid,
        "format": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1},
        "output_format": {"encoding": "pcm_s16le", "sample_rate": 24000},
        **extra,
    }
    return json.dumps(body)


async def send_audio(ws: ClientWebSocketResponse, rid: str, pcm: bytes, chunk: int = 640) -> None:
    """`pcm` as binary frames of `chunk` bytes (20 ms at 16 kHz by default)."""
    for i in range(0, len(pcm), chunk):
        await ws.send_bytes(encode_binary(rid, pcm[i : i + chunk]))


@dataclass
class Conversation:
    """What a client has read of one conversation: its frames and reply audio bytes."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    audio_at_frame: list[int] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """The frames of one type, in order."""
        return [f for f in self.frames if f["type"] == kind]

    @property
    def ended(self) -> bool:
        """Whether the terminal frame arrived."""
        return bool(self.frames) and _terminal(self.frames[-1])


def _terminal(frame: dict[str, Any]) -> bool:
    if frame["type"] == "done":
        return True
    return frame["type"] == "error" and "finish_reason" in frame["error"]


async def read_conversation(
    ws: ClientWebSocketResponse,
    conversation: Conversation,
    rid: str,
    until: Callable[[Conversation], bool] | None = None,
    within: float = 20.0,
) -> Conversation:
    """Read frames of `rid` into `conversation` until `until` holds or it ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not conversation.ended and not (until is not None and until(conversation)):
        msg = await asyncio.wait_for(ws.receive(), max(0.01, deadline - loop.time()))
        if msg.type is WSMsgType.BINARY:
            request_id, audio = split_binary(msg.data)
            assert request_id == rid
            conversation.audio.extend(audio)
            continue
        assert msg.type is WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        assert frame["request_id"] == rid, frame
        conversation.frames.append(frame)
        conversation.audio_at_frame.append(len(conversation.audio))
    return conversation
