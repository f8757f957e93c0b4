"""`POST /v1/audio/transcriptions`: OpenAI's speech-to-text over a speech router's
listen pipeline.

Multipart `{file, model: speech router id, response_format?: json | text,
language?}` -> one `listen` request through the router's listen endpoint
pipeline: the file's bytes as its audio (the pipeline decodes WAV, FLAC, Ogg and
MP3, told which by the file's first bytes), then `end` -> the final transcripts
joined in segment order -> `{"text": ...}` (with `usage` in seconds of audio),
or the text alone for `response_format: text`. `prompt` and `temperature` are
accepted and ignored; other response formats are refused (400).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import web

from observability.telemetry import ABORTED, ERROR, OK, REJECTED
from openai_api.endpoint_call import request_frames
from openai_api.errors import ApiError, Handler, openai_errors
from openai_api.form import Form, read_form
from openai_api.gate import accepting, allowed, authenticated, in_flight, take_request
from openai_api.rx_iter import RxIterator
from openai_api.speech_common import admission_for, frame_error, speech_endpoint, telemetry_of
from openai_api.types import GatewayKey, GatewayView
from protocol.frames import ErrorName
from protocol.messages import ClientMessage
from transport.http_json import json_response

ENDPOINT = "audio_transcriptions"
CHUNK_BYTES = 64 * 1024
RESPONSE_FORMATS = ("json", "text")


def sniff_encoding(data: bytes) -> str | None:
    """The listen encoding of a file from its first bytes (None: not one we decode)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def listen_messages(
    request_id: str, encoding: str, audio: bytes, language: str | None
) -> list[ClientMessage]:
    """`listen`, the audio in chunks, `end`: what a websocket client would send."""
    start: dict[str, Any] = {
        "type": "listen",
        "request_id": request_id,
        "format": {"encoding": encoding},
    }
    if language:
        start["language"] = language
    messages = [ClientMessage(request_id, "listen", start)]
    messages += [
        ClientMessage(request_id, "audio", {}, audio=audio[i : i + CHUNK_BYTES])
        for i in range(0, len(audio), CHUNK_BYTES)
    ]
    messages.append(ClientMessage(request_id, "end", {"type": "end", "request_id": request_id}))
    return messages


def _field(form: Form, name: str) -> str | None:
    if name in form.files:
        raise ApiError(400, f"{name} must be a text field", code="invalid_request", param=name)
    return form.fields.get(name)


async def _read_form(request: web.Request, max_bytes: int) -> tuple[bytes, str, str, str | None]:
    """(file bytes, model, response_format, language) of the multipart body, or 400."""
    form = await read_form(request, max_bytes, ENDPOINT)
    audio = form.files.get("file")
    if audio is None:
        raise ApiError(
            400, "file is required (an audio file)", code="invalid_request", param="file"
        )
    model = _field(form, "model")
    if not model:
        raise ApiError(
            400, "model is required (a speech router id)", code="invalid_request", param="model"
        )
    response_format = _field(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format {response_format!r} is not supported (use json or text)",
            code="invalid_request",
            param="response_format",
        )
    return audio, model, response_format, _field(form, "language") or None


def transcriptions(gateway_key: GatewayKey) -> Handler:
    """The handler of `POST /v1/audio/transcriptions` for the gateway at `app[gateway_key]`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        client = authenticated(request)
        gateway: GatewayView = request.app[gateway_key]
        accepting(gateway)
        limit = gateway.config.limits.text_frame_bytes
        audio, model, response_format, language = await _read_form(request, limit)
        endpoint = speech_endpoint(gateway, model, "listen")
        allowed(client, model)
        encoding = sniff_encoding(audio)
        if encoding is None:
            raise ApiError(
                400,
                "the file is not WAV, FLAC, Ogg or MP3 audio",
                code="unsupported_format",
                param="file",
            )
        await take_request(client, gateway)
        request_id = f"transcription-{uuid.uuid4().hex}"
        tracked = telemetry_of(gateway).request(ENDPOINT, model, request_id, key_id=client.key_id)
        frames = request_frames(
            endpoint,
            admission_for(gateway, client, tracked),
            listen_messages(request_id, encoding, audio, language),
        )
        with in_flight(gateway):
            try:
                text, seconds = await _transcript(frames, gateway)
            except asyncio.CancelledError:
                tracked.finish(ABORTED)
                raise
            except ApiError as error:
                tracked.finish(REJECTED if error.status < 500 else ERROR, error=error.code)
                raise
        tracked.finish(OK)
        if response_format == "text":
            return web.Response(text=text, content_type="text/plain")
        return json_response({"text": text, "usage": {"type": "duration", "seconds": seconds}})

    return openai_errors(handle)


async def _transcript(frames: Any, gateway: GatewayView) -> tuple[str, float]:
    """The request's final transcripts joined in segment order, and its audio seconds."""
    finals: dict[int, str] = {}
    async with RxIterator(frames, gateway.scheduler) as items:
        async for frame in items:
            data = frame.data
            if isinstance(data, bytes):
                continue
            kind = data.get("type")
            if kind == "transcript" and data.get("is_final"):
                finals[int(data["segment_id"])] = str(data.get("text") or "")
            elif kind == "error" and "finish_reason" in (data.get("error") or {}):
                raise frame_error(data, gateway.redact)
            elif kind == "done":
                usage = data.get("usage") or {}
                text = " ".join(t.strip() for _, t in sorted(finals.items()) if t.strip())
                return text, round(float(usage.get("audio_ms") or 0) / 1000, 3)
    raise ApiError(500, "the transcription ended without a result", code=ErrorName.UNKNOWN_ERROR)
