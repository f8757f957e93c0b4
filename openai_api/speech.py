"""`POST /v1/audio/speech`: OpenAI's text-to-speech over a speech router's speak pipeline.

Body `{model: speech router id, input, voice?, response_format?, speed?}` ->
one `speak` request (final text) through the router's speak endpoint pipeline ->
the audio as the response body, streamed sentence by sentence.

- `response_format`: `mp3` (OpenAI's default), `opus` (Ogg Opus), `wav`, `flac`,
  `pcm` (raw 16-bit little-endian mono); all at 24 kHz, as OpenAI's are. `aac`
  is refused (400). `speed` and `instructions` are accepted and ignored.
- `voice`: one of OpenAI's voice names (`alloy`, `nova`, ...) goes to OpenAI
  models only, the others use their configured voice; any other name goes to
  every model (e.g. an espeak-ng voice such as `en-us`).
- Failover inside a sentence is invisible: a sentence's audio is held until the
  sentence is complete, and a failed model's partial audio is dropped (the
  speak pipeline's `model_unavailable` says how many bytes). A failure before
  any audio is an HTTP error; after audio was sent the connection is closed
  without the body's end, so the client sees a truncated response.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from observability.telemetry import ABORTED, ERROR, OK, REJECTED
from openai_api.body import read_json
from openai_api.endpoint_call import request_frames
from openai_api.errors import ApiError, Handler, openai_errors
from openai_api.gate import accepting, allowed, authenticated, in_flight, take_request
from openai_api.rx_iter import RxIterator
from openai_api.speech_common import admission_for, frame_error, speech_endpoint, telemetry_of
from openai_api.types import GatewayKey, GatewayView
from protocol.frames import ErrorName
from protocol.messages import ClientMessage

log = logging.getLogger("sluice.openai")

ENDPOINT = "audio_speech"
SAMPLE_RATE = 24000

FORMATS: dict[str, tuple[str, str]] = {
    "mp3": ("mp3", "audio/mpeg"),
    "opus": ("ogg_opus", "audio/ogg"),
    "wav": ("wav", "audio/wav"),
    "flac": ("flac", "audio/flac"),
    "pcm": ("pcm_s16le", "audio/pcm"),
}
"""OpenAI's `response_format` -> (the speak pipeline's encoding, Content-Type)."""

OPENAI_VOICES = frozenset(
    {
        "alloy", "ash", "ballad", "coral", "echo", "fable", "nova",
        "onyx", "sage", "shimmer", "verse", "marin", "cedar",
    }
)  # fmt: skip


class SpeechBody(BaseModel):
    """The body of `POST /v1/audio/speech`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1)
    input: str = Field(min_length=1)
    voice: str | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float | None = None
    instructions: str | None = None
    stream_format: Literal["audio"] | None = None


def voice_for(voice: str | None) -> str | dict[str, str] | None:
    """The speak request's `voice`: OpenAI's names for OpenAI models only."""
    if voice is not None and voice.lower() in OPENAI_VOICES:
        return {"openai": voice.lower()}
    return voice


def speak_message(request_id: str, body: SpeechBody, encoding: str) -> ClientMessage:
    """The `speak` message (all the text, final) for `body`."""
    message: dict[str, Any] = {
        "type": "speak",
        "request_id": request_id,
        "text": body.input,
        "format": {"encoding": encoding, "sample_rate": SAMPLE_RATE},
        "final": True,
    }
    voice = voice_for(body.voice)
    if voice is not None:
        message["voice"] = voice
    return ClientMessage(request_id, "speak", message)


def speech(gateway_key: GatewayKey) -> Handler:
    """The handler of `POST /v1/audio/speech` for the gateway at `app[gateway_key]`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        client = authenticated(request)
        gateway: GatewayView = request.app[gateway_key]
        accepting(gateway)
        body = await read_json(request, SpeechBody)
        if body.response_format not in FORMATS:
            raise ApiError(
                400,
                f"response_format {body.response_format!r} is not supported "
                f"(use one of: {', '.join(FORMATS)})",
                code="unsupported_format",
                param="response_format",
            )
        endpoint = speech_endpoint(gateway, body.model, "speak")
        allowed(client, body.model)
        await take_request(client, gateway)
        request_id = f"speech-{uuid.uuid4().hex}"
        tracked = telemetry_of(gateway).request(
            ENDPOINT, body.model, request_id, key_id=client.key_id
        )
        encoding, content_type = FORMATS[body.response_format]
        frames = request_frames(
            endpoint,
            admission_for(gateway, client, tracked),
            [speak_message(request_id, body, encoding)],
        )
        with in_flight(gateway):
            writer = _AudioWriter(request, content_type)
            try:
                async with RxIterator(frames, gateway.scheduler) as items:
                    async for frame in items:
                        if isinstance(frame.data, bytes):
                            writer.pending += frame.data
                            continue
                        await _on_event(frame.data, writer, gateway)
            except asyncio.CancelledError:
                tracked.finish(ABORTED)
                raise
            except ConnectionResetError:
                tracked.finish(ABORTED)
                return writer.response or web.Response(status=499)
            except ApiError as error:
                tracked.finish(REJECTED if error.status < 500 else ERROR, error=error.code)
                if writer.response is None:
                    raise
                log.warning(
                    "speech failed after audio was sent; closing the connection",
                    extra={"router": body.model, "error": error.code},
                )
                return writer.abort()
            tracked.finish(OK)
            await writer.flush()
            assert writer.response is not None
            return writer.response

    return openai_errors(handle)


class _AudioWriter:
    """Holds the sentence in progress; writes whole sentences to the response."""

    def __init__(self, request: web.Request, content_type: str) -> None:
        self.request = request
        self.content_type = content_type
        self.pending = bytearray()
        self.response: web.StreamResponse | None = None

    async def flush(self) -> None:
        """Send what is held (starting the response on the first call)."""
        if self.response is None:
            self.response = web.StreamResponse(headers={"Content-Type": self.content_type})
            await self.response.prepare(self.request)
        if self.pending:
            data = bytes(self.pending)
            self.pending.clear()
            await self.response.write(data)

    def drop(self, count: int) -> None:
        """Forget the last `count` held bytes (a failed model's partial sentence)."""
        if count > 0:
            del self.pending[max(0, len(self.pending) - count) :]

    def abort(self) -> web.StreamResponse:
        """End a started response without its end, so the client sees it truncated."""
        transport = self.request.transport
        if transport is not None:
            transport.close()
        assert self.response is not None
        return self.response


async def _on_event(data: dict[str, Any], writer: _AudioWriter, gateway: GatewayView) -> None:
    kind = data.get("type")
    if kind == "segment":
        await writer.flush()
    elif kind == "error":
        error = data.get("error") or {}
        if "finish_reason" in error:
            raise frame_error(data, gateway.redact)
        if error.get("name") == ErrorName.MODEL_UNAVAILABLE:
            writer.drop(int(error.get("drop_bytes") or 0))
