"""Fake text-to-speech servers on 127.0.0.1: OpenAI speech and ElevenLabs, with faults.

Flow: a vendor request comes in (one sentence); the fake answers in that vendor's
wire format with a deterministic tone: `round(len(text) * ms_per_char)` ms of a
sine at the requested PCM rate, cut into `chunk_ms` chunks, `delay` seconds
before each (so a test can compute every byte it should receive), or with one of
the `Fault`s. `script.faults` is consumed one per request before `script.fault`
applies, so a test can fail exactly the Nth sentence.

- OpenAI: `POST /v1/audio/speech` `{model, input, voice, response_format: "pcm"}`
  -> 200, chunked body of 16-bit little-endian PCM at 24 kHz; errors are
  `{"error": {"message", "type", "code"}}` with the HTTP status.
- ElevenLabs HTTP: `POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_R`
  with `xi-api-key` -> chunked raw PCM; errors are `{"detail": {"status",
  "message"}}`.
- ElevenLabs websocket: `GET /v1/text-to-speech/{voice_id}/stream-input
  ?model_id=M&output_format=pcm_R` with `xi-api-key`. The first message must be
  `{"text": " "}`; text accumulates until `flush: true` or the end-of-stream
  `{"text": ""}`; audio goes out as `{"audio": <base64>, "isFinal": false,
  "normalizedAlignment": {...}}`, and after the end of stream `{"isFinal": true}`,
  then the server closes. A failure is `{"message", "error", "code"}` and a close.
  Without any message for `inactivity_timeout` s (default 20) it closes with
  `input_timeout_exceeded`; a `{"text": " "}` keeps it open.

Faults: refuse, http_400, http_401, http_429 (Retry-After), http_500,
stall_before_first, stall_mid_stream, fail_mid_stream (audio, then the connection
drops: a mid-sentence failure), truncated (Content-Length promised, body cut),
malformed (JSON where audio belongs / a non-JSON ws message), half_sample (an odd
byte count), empty (success with no audio), error_event (ws: a vendor error
message), drop (ws: closed before isFinal, no audio).

    async with run_fake_openai_speech() as fake:
        fake.script.faults = ["none", "fail_mid_stream"]
        ...  # point a speak model's base_url at fake.url
        await fake.stats.wait_stream_closed()
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from aiohttp import WSMsgType, web

from fakes.common import (
    STOPPING,
    ClientGone,
    FakeStats,
    RunningFake,
    fake_app,
    refuse,
    serve_app,
    stall_until_client_gone,
    track_stream,
)

Fault = Literal[
    "none",
    "refuse",
    "http_400",
    "http_401",
    "http_429",
    "http_500",
    "stall_before_first",
    "stall_mid_stream",
    "fail_mid_stream",
    "truncated",
    "malformed",
    "half_sample",
    "empty",
    "error_event",
    "drop",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)
HTTP_FAULT_STATUS = {"http_400": 400, "http_401": 401, "http_429": 429, "http_500": 500}
OPENAI_RATE = 24000
ELEVENLABS_RATES = (16000, 22050, 24000, 44100)


@dataclass
class FakeSpeechScript:
    """How the fake answers; tests mutate it between (or during) requests."""

    fault: Fault = "none"
    faults: list[Fault] = field(default_factory=list)
    ms_per_char: float = 10.0
    chunk_ms: int = 20
    delay: float = 0.0
    fault_after_chunks: int = 2
    retry_after: str | None = "1"
    api_key: str | None = None
    """When set, requests must carry this key (else 401)."""

    def next_fault(self) -> Fault:
        """The fault for the next request (the queue first, then `fault`)."""
        return self.faults.pop(0) if self.faults else self.fault


@dataclass
class FakeSpeechStats(FakeStats):
    """What the fake has seen (see `FakeStats`). A "stream" is a 200 response (or an
    upgraded socket); `texts` are the sentences spoken, `ws_messages` the websocket
    messages received, `bytes_sent` the PCM bytes written."""

    texts: list[str] = field(default_factory=list)
    ws_messages: list[Any] = field(default_factory=list)
    bytes_sent: int = 0


def tone(text: str, rate: int, ms_per_char: float) -> bytes:
    """The fake's audio for `text`: a 220 Hz sine, `len(text) * ms_per_char` ms long."""
    count = round(len(text) * ms_per_char * rate / 1000)
    t = np.arange(count) / rate
    return (np.sin(2 * math.pi * 220 * t) * 8000).astype("<i2").tobytes()


def expected_bytes(text: str, rate: int, ms_per_char: float = 10.0) -> int:
    """How many PCM bytes the fake sends for `text` at `rate` (for assertions)."""
    return 2 * round(len(text) * ms_per_char * rate / 1000)


def _chunks(audio: bytes, rate: int, chunk_ms: int) -> list[bytes]:
    size = max(2, 2 * round(rate * chunk_ms / 1000))
    return [audio[i : i + size] for i in range(0, len(audio), size)]


FAKE_SCRIPT = web.AppKey("fake_tts_script", FakeSpeechScript)
FAKE_STATS = web.AppKey("fake_tts_stats", FakeSpeechStats)


class _Base:
    """Shared request bookkeeping of one fake app."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def script(self) -> FakeSpeechScript:
        return self.app[FAKE_SCRIPT]

    @property
    def stats(self) -> FakeSpeechStats:
        return self.app[FAKE_STATS]

    def record(self, request: web.Request, body: dict[str, Any] | None) -> None:
        stats = self.stats
        stats.requests += 1
        stats.last_headers = dict(request.headers)
        stats.last_query = dict(request.query)
        stats.last_path = request.path
        stats.last_body = body
        stats.notify()

    async def stream_pcm(
        self, request: web.Request, audio: bytes, rate: int, fault: str
    ) -> web.StreamResponse:
        """A 200 with the audio as a chunked body, misbehaving as `fault` says."""
        script, stats = self.script, self.stats
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        chunks = [] if fault == "empty" else _chunks(audio, rate, script.chunk_ms)
        if fault == "truncated":
            resp.content_length = len(audio) + 1000
        else:
            resp.enable_chunked_encoding()
        # A response that ends while the server stops still counts as completed here.
        async with track_stream(request, stats, completed_while_stopping=True):
            await resp.prepare(request)
            if fault == "stall_before_first":
                await stall_until_client_gone(request)
                return resp
            for number, chunk in enumerate(chunks):
                if number >= script.fault_after_chunks and fault in (
                    "stall_mid_stream",
                    "fail_mid_stream",
                    "truncated",
                ):
                    break
                if script.delay:
                    await asyncio.sleep(script.delay)
                if request.transport is None or request.transport.is_closing():
                    raise ClientGone
                await resp.write(chunk)
                stats.bytes_sent += len(chunk)
            if fault == "stall_mid_stream":
                await stall_until_client_gone(request)
                return resp
            if fault in ("fail_mid_stream", "truncated"):
                if request.transport is not None:
                    request.transport.close()
                return resp
            if fault == "half_sample":
                await resp.write(b"\x01")
            await resp.write_eof()
        return resp


class _OpenAISpeech(_Base):
    """`POST /v1/audio/speech`."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.record(request, body if isinstance(body, dict) else None)
        script = self.script
        fault = script.next_fault()
        if script.api_key and request.headers.get("Authorization") != f"Bearer {script.api_key}":
            fault = "http_401"
        if fault == "refuse":
            return refuse(request)
        if fault in HTTP_FAULT_STATUS:
            return self._error(HTTP_FAULT_STATUS[fault])
        if not isinstance(body, dict) or not isinstance(body.get("input"), str):
            return self._error(400, "'input' is a required property")
        if body.get("response_format") != "pcm":
            return self._error(400, "this fake only speaks response_format 'pcm'")
        text = str(body["input"])
        self.stats.texts.append(text)
        if fault == "malformed":
            return web.json_response({"error": {"message": "not audio", "type": "server_error"}})
        audio = tone(text, OPENAI_RATE, script.ms_per_char)
        return await self.stream_pcm(request, audio, OPENAI_RATE, fault)

    def _error(self, status: int, message: str | None = None) -> web.Response:
        texts = {
            400: ("invalid_request_error", "Invalid request."),
            401: ("invalid_request_error", "Incorrect API key provided: sk-fake***1234."),
            429: ("requests", "Rate limit reached for requests."),
            500: ("server_error", "The server had an error while processing your request."),
        }
        kind, default = texts.get(status, ("server_error", "error"))
        headers = {}
        if status == 429 and self.script.retry_after is not None:
            headers["Retry-After"] = self.script.retry_after
        return web.json_response(
            {"error": {"message": message or default, "type": kind, "param": None, "code": None}},
            status=status,
            headers=headers,
        )


def _eleven_error(status: int, retry_after: str | None) -> web.Response:
    statuses = {
        400: ("invalid_request", "The request is invalid."),
        401: ("invalid_api_key", "Invalid API key"),
        429: ("too_many_concurrent_requests", "Too many concurrent requests."),
        500: ("internal_error", "An internal error occurred."),
    }
    code, message = statuses.get(status, ("error", "error"))
    headers = {"Retry-After": retry_after} if status == 429 and retry_after else {}
    return web.json_response(
        {"detail": {"status": code, "message": message}}, status=status, headers=headers
    )


def _eleven_rate(request: web.Request) -> int | None:
    output = request.query.get("output_format", "mp3_44100_128")
    if not output.startswith("pcm_"):
        return None
    try:
        rate = int(output[4:])
    except ValueError:
        return None
    return rate if rate in ELEVENLABS_RATES else None


class _Inbox:
    """Reads a server websocket in its own task, as a real server does while it talks.

    `get()` returns the next message, or None once the client closed; `closed` is
    set as soon as the client's close frame (or a dropped connection) is read.
    """

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.task = asyncio.create_task(self._read(ws))

    async def _read(self, ws: web.WebSocketResponse) -> None:
        try:
            async for msg in ws:
                self._queue.put_nowait(msg)
        finally:
            self.closed.set()
            self._queue.put_nowait(None)

    async def get(self, within: float) -> Any:
        """The next message (None: the client is gone); TimeoutError after `within` s."""
        return await asyncio.wait_for(self._queue.get(), within)

    async def stop(self) -> None:
        """End the reader task."""
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


class _ElevenLabs(_Base):
    """ElevenLabs' HTTP stream and `stream-input` websocket."""

    def _fault(self, request: web.Request) -> Fault:
        fault = self.script.next_fault()
        key = self.script.api_key
        if key and request.headers.get("xi-api-key") != key:
            return "http_401"
        return fault

    async def http_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.record(request, body if isinstance(body, dict) else None)
        fault = self._fault(request)
        if fault == "refuse":
            return refuse(request)
        if fault in HTTP_FAULT_STATUS:
            return _eleven_error(HTTP_FAULT_STATUS[fault], self.script.retry_after)
        rate = _eleven_rate(request)
        if rate is None or not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return web.json_response(
                {"detail": [{"loc": ["body", "text"], "msg": "invalid request"}]}, status=422
            )
        text = str(body["text"])
        self.stats.texts.append(text)
        if fault == "malformed":
            return web.json_response({"detail": {"status": "error", "message": "not audio"}})
        return await self.stream_pcm(
            request, tone(text, rate, self.script.ms_per_char), rate, fault
        )

    async def stream_input(self, request: web.Request) -> web.StreamResponse:
        self.record(request, None)
        fault = self._fault(request)
        if fault == "refuse":
            return refuse(request)
        if fault in HTTP_FAULT_STATUS:
            return _eleven_error(HTTP_FAULT_STATUS[fault], self.script.retry_after)
        rate = _eleven_rate(request)
        if rate is None:
            return _eleven_error(400, None)
        inactivity = float(request.query.get("inactivity_timeout", "20"))
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        stats = self.stats
        stats.open_streams += 1
        stats.streams_started += 1
        stats.notify()
        outcome = "closed_by_client"
        inbox = _Inbox(ws)
        try:
            outcome = await self._converse(ws, inbox, rate, fault, inactivity)
        except (ConnectionResetError, ClientGone):
            outcome = "closed_by_client"
        except asyncio.CancelledError:
            if self.app[STOPPING].is_set():
                outcome = "stopped"
            raise
        finally:
            if outcome == "closed_by_client":
                stats.streams_closed_by_client += 1
            elif outcome == "completed":
                stats.streams_completed += 1
            stats.open_streams -= 1
            stats.notify()
            if not ws.closed:
                await ws.close()
            await inbox.stop()
        return ws

    async def _converse(
        self, ws: web.WebSocketResponse, inbox: _Inbox, rate: int, fault: str, inactivity: float
    ) -> str:
        """One stream-input conversation; returns how it ended."""
        stats = self.stats
        text = ""
        opened = False
        while True:
            try:
                msg = await inbox.get(inactivity)
            except TimeoutError:
                await self._vendor_error(ws, "input_timeout_exceeded", "No input received.")
                return "server_closed"
            if msg is None:
                return "closed_by_client"
            if msg.type is not WSMsgType.TEXT:
                await self._vendor_error(ws, "invalid_message", "Expected a JSON text message.")
                return "server_closed"
            try:
                event = json.loads(msg.data)
            except ValueError:
                await self._vendor_error(ws, "invalid_message", "Invalid JSON.")
                return "server_closed"
            stats.ws_messages.append(event)
            stats.notify()
            piece = event.get("text") if isinstance(event, dict) else None
            if not isinstance(piece, str):
                await self._vendor_error(ws, "invalid_message", "text is required.")
                return "server_closed"
            if not opened:
                if piece != " ":
                    await self._vendor_error(
                        ws, "invalid_message", "The first message must have text ' '."
                    )
                    return "server_closed"
                opened = True
                continue
            end_of_stream = piece == ""
            text += piece
            if (end_of_stream or event.get("flush") is True) and text.strip():
                spoken, text = text.strip(), ""
                stats.texts.append(spoken)
                ended = await self._speak(ws, inbox, spoken, rate, fault)
                if ended is not None:
                    return ended
            if end_of_stream:
                await ws.send_str(json.dumps({"isFinal": True}))
                await ws.close()
                return "completed"

    async def _speak(
        self, ws: web.WebSocketResponse, inbox: _Inbox, text: str, rate: int, fault: str
    ) -> str | None:
        """Send the audio for `text`; a return value ends the conversation."""
        script, stats = self.script, self.stats
        if fault == "stall_before_first":
            return await self._stall_ws(inbox)
        if fault == "error_event":
            await self._vendor_error(ws, "quota_exceeded", "This request exceeds your quota.")
            return "server_closed"
        if fault == "malformed":
            await ws.send_str("this is not json")
            await ws.close()
            return "server_closed"
        if fault == "drop":
            await ws.close(code=1011)
            return "server_closed"
        if fault == "empty":
            await ws.send_str(json.dumps({"isFinal": True}))
            await ws.close()
            return "completed"
        audio = tone(text, rate, script.ms_per_char)
        if fault == "half_sample":
            audio += b"\x01"
        for number, chunk in enumerate(_chunks(audio, rate, script.chunk_ms)):
            if number >= script.fault_after_chunks:
                if fault == "stall_mid_stream":
                    return await self._stall_ws(inbox)
                if fault == "fail_mid_stream":
                    await ws.close(code=1011, message=b"internal error")
                    return "server_closed"
            if script.delay:
                await asyncio.sleep(script.delay)
            if inbox.closed.is_set() or ws.closed:
                raise ClientGone
            await ws.send_str(
                json.dumps(
                    {
                        "audio": base64.b64encode(chunk).decode(),
                        "isFinal": False,
                        "normalizedAlignment": {
                            "chars": list(text[:3]),
                            "charStartTimesMs": [0, 10, 20][: len(text[:3])],
                            "charsDurationsMs": [10, 10, 10][: len(text[:3])],
                        },
                        "alignment": None,
                    }
                )
            )
            stats.bytes_sent += len(chunk)
        return None

    async def _stall_ws(self, inbox: _Inbox) -> str:
        stopping = self.app[STOPPING]
        while not stopping.is_set():
            if inbox.closed.is_set():
                return "closed_by_client"
            await asyncio.sleep(0.005)
        return "stopped"

    async def _vendor_error(self, ws: web.WebSocketResponse, code: str, message: str) -> None:
        await ws.send_str(json.dumps({"message": message, "error": code, "code": 1008}))
        await ws.close(code=1008, message=code.encode())


@dataclass(frozen=True)
class FakeSpeechServer(RunningFake[FakeSpeechScript, FakeSpeechStats]):
    """A running fake: `url` is the base URL to configure, `ws_url` its ws:// twin."""

    ws_url: str
    script_key = FAKE_SCRIPT
    stats_key = FAKE_STATS


def _base_app(script: FakeSpeechScript | None) -> web.Application:
    script = script if script is not None else FakeSpeechScript()
    return fake_app(FAKE_SCRIPT, script, FAKE_STATS, FakeSpeechStats())


def make_fake_openai_speech_app(script: FakeSpeechScript | None = None) -> web.Application:
    """The OpenAI speech fake's app: `POST /v1/audio/speech`."""
    app = _base_app(script)
    app.router.add_post("/v1/audio/speech", _OpenAISpeech(app).handle)
    return app


def make_fake_elevenlabs_app(script: FakeSpeechScript | None = None) -> web.Application:
    """The ElevenLabs fake's app: the HTTP stream and the stream-input websocket."""
    app = _base_app(script)
    handler = _ElevenLabs(app)
    app.router.add_post("/v1/text-to-speech/{voice_id}/stream", handler.http_stream)
    app.router.add_get("/v1/text-to-speech/{voice_id}/stream-input", handler.stream_input)
    return app


@asynccontextmanager
async def _serve(
    app: web.Application, host: str, port: int, prefix: str
) -> AsyncIterator[FakeSpeechServer]:
    async with serve_app(app, host, port) as root:
        ws_url = root.replace("http://", "ws://", 1)
        yield FakeSpeechServer(url=f"{root}{prefix}", ws_url=ws_url, app=app)


@asynccontextmanager
async def run_fake_openai_speech(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeSpeechScript | None = None
) -> AsyncIterator[FakeSpeechServer]:
    """Serve the OpenAI speech fake; `url` ends in `/v1` (an OpenAI `base_url`)."""
    async with _serve(make_fake_openai_speech_app(script), host, port, "/v1") as fake:
        yield fake


@asynccontextmanager
async def run_fake_elevenlabs(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeSpeechScript | None = None
) -> AsyncIterator[FakeSpeechServer]:
    """Serve the ElevenLabs fake; `url` / `ws_url` are its `base_url` / `ws_url`."""
    async with _serve(make_fake_elevenlabs_app(script), host, port, "") as fake:
        yield fake
