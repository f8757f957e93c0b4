"""Fake speech-to-text vendors on 127.0.0.1: OpenAI transcriptions and Deepgram live.

Both speak the vendor's real wire format and inject faults, for tests and
benchmarks. They cannot recognise speech; what they "hear" is described by a
checksum of the PCM they received, `pcm <samples> <sum of samples>`, so a test
can prove that no sample was lost or sent twice across a failover (the counts
and sums of the pieces add up to those of the whole segment; see `pcm_totals`).
A script's `text` replaces the checksum with fixed words.

- `run_fake_transcription()`: `POST /v1/audio/transcriptions` (multipart: `file`
  as WAV, `model`, `language`, `response_format`, `stream`). Answers
  `{"text": ...}`, or with `stream=true` SSE `transcript.text.delta` events (one
  per word) and a `transcript.text.done`.
- `run_fake_deepgram()`: websocket `GET /v1/listen?encoding=linear16&sample_rate=
  ...&interim_results=...` with `Authorization: Token <key>`. Binary frames are
  audio; every `final_every_ms` of audio it sends a final `Results` covering
  exactly that audio (with interim `Results` in between when asked); `Finalize`
  flushes the rest (`from_finalize: true`), `CloseStream` flushes, sends
  `Metadata` and closes with 1000. `KeepAlive` frames are counted.

Faults (`script.fault`, or per request the `x-fake-fault` header / query
parameter): `refuse` (connection closed before any answer), `http_500`,
`http_429` (with Retry-After), `http_401`, `http_400`, `stall` (no final
transcript after the segment ends; the connection stays open), `drop` (the
connection is cut mid-stream: Deepgram after `drop_after_finals` final results,
OpenAI in the middle of its SSE or JSON body), `malformed` (a body / message that is not the
vendor's JSON), `empty` (OpenAI: a 200 with an empty body; Deepgram: the socket
closes normally before any result).

    async with run_fake_deepgram() as fake:
        fake.script.fault = "drop"
        ...  # point a DeepgramConfig(ws_url=fake.ws_url) at it
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from aiohttp import WSMsgType, web

from fakes.common import (
    FAULT_HEADER,
    STOPPING,
    ClientGone,
    RunningFake,
    Waitable,
    fake_app,
    refuse,
    serve_app,
    stall_until_client_gone,
)

SttFault = Literal[
    "none",
    "refuse",
    "http_500",
    "http_429",
    "http_401",
    "http_400",
    "stall",
    "drop",
    "malformed",
    "empty",
]
STT_FAULTS: tuple[SttFault, ...] = get_args(SttFault)
_STATUS = {"http_400": 400, "http_401": 401, "http_429": 429, "http_500": 500}
_PCM_TEXT = re.compile(r"pcm (\d+) (-?\d+)")


def describe_pcm(pcm: bytes) -> str:
    """The fake's "transcript" of PCM16 audio: `pcm <samples> <sum of samples>`."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    return f"pcm {samples.size} {int(samples.astype(np.int64).sum())}"


def pcm_totals(text: str) -> tuple[int, int]:
    """Sum the `(samples, sum)` of every `pcm n s` piece in a transcript."""
    count = total = 0
    for match in _PCM_TEXT.finditer(text):
        count += int(match.group(1))
        total += int(match.group(2))
    return count, total


@dataclass
class FakeSttScript:
    """How a fake answers; tests mutate it between requests.

    `text` replaces the checksum transcript; `delay` is slept before answering
    (OpenAI) or before each result (Deepgram); `retry_after` is the 429's header.
    Deepgram only: `final_every_ms` of audio per final result, and
    `drop_after_finals` final results before the `drop` fault cuts the socket.
    """

    fault: SttFault = "none"
    text: str | None = None
    delay: float = 0.0
    retry_after: str | None = "1"
    api_key: str | None = None
    final_every_ms: int = 500
    drop_after_finals: int = 1


@dataclass
class FakeSttStats(Waitable):
    """What a fake has seen (counters only grow, except `open`)."""

    requests: int = 0
    completed: int = 0
    closed_by_client: int = 0
    open: int = 0
    keepalives: int = 0
    finalizes: int = 0
    audio: list[bytes] = field(default_factory=list)
    last_fields: dict[str, str] = field(default_factory=dict)
    last_query: dict[str, str] = field(default_factory=dict)
    last_headers: dict[str, str] = field(default_factory=dict)

    async def wait_until(self, predicate: Callable[[], bool], within: float = 2.0) -> None:
        """Return once `predicate()` holds; TimeoutError after `within` seconds."""
        await super().wait_until(predicate, within)


SCRIPT = web.AppKey("fake_stt_script", FakeSttScript)
STATS = web.AppKey("fake_stt_stats", FakeSttStats)


def _fault(request: web.Request, script: FakeSttScript) -> str:
    return request.headers.get(FAULT_HEADER) or request.query.get("fault") or script.fault


def _auth_ok(request: web.Request, script: FakeSttScript, scheme: str) -> bool:
    if script.api_key is None:
        return True
    return request.headers.get("Authorization") == f"{scheme} {script.api_key}"


# ---- OpenAI /v1/audio/transcriptions ------------------------------------------------


def _openai_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    codes = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"}
    body = {"error": {"message": message, "type": codes.get(status, "server_error"), "code": None}}
    return web.json_response(body, status=status, headers=headers)


async def _transcriptions(request: web.Request) -> web.StreamResponse:
    app = request.app
    script, stats = app[SCRIPT], app[STATS]
    stats.requests += 1
    stats.last_headers = dict(request.headers)
    fault = _fault(request, script)
    if fault == "refuse":
        return refuse(request)
    if not _auth_ok(request, script, "Bearer"):
        return _openai_error(401, "Incorrect API key provided: sk-fake***.")
    if fault in _STATUS:
        status = _STATUS[fault]
        headers = (
            {"Retry-After": script.retry_after} if status == 429 and script.retry_after else {}
        )
        messages = {
            400: "Audio file is too short. Minimum audio length is 0.1 seconds.",
            401: "Incorrect API key provided: sk-fake***.",
            429: "Rate limit reached for requests. Please try again later.",
            500: "The server had an error while processing your request. Sorry about that!",
        }
        return _openai_error(status, messages[status], headers)
    form = await request.post()
    uploads = [v for v in form.values() if isinstance(v, web.FileField)]
    blobs = {}
    for upload in uploads:
        with upload.file:
            blobs[upload.name] = upload.file.read()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    stats.last_fields = fields
    if "file" not in blobs or "model" not in fields:
        return _openai_error(400, "file and model are required")
    try:
        with wave.open(io.BytesIO(blobs["file"]), "rb") as wav:
            pcm = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError):
        return _openai_error(400, "Invalid file format.")
    stats.audio.append(pcm)
    stats.open += 1
    stats.notify()
    try:
        if script.delay:
            await asyncio.sleep(script.delay)
        text = script.text if script.text is not None else describe_pcm(pcm)
        if fault == "stall":
            try:
                with suppress(ClientGone):
                    await stall_until_client_gone(request)
            finally:
                if not app[STOPPING].is_set():
                    stats.closed_by_client += 1
            return web.Response()
        if fault == "malformed":
            return web.Response(body=b'{"text": "unterminated', content_type="application/json")
        if fault == "empty":
            return web.Response(body=b"", content_type="application/json")
        if fields.get("stream") == "true":
            return await _transcription_stream(request, text, fault)
        if fault == "drop":  # half of the JSON body, then the connection is cut
            body = json.dumps({"text": text}).encode()
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            if request.transport is not None:
                request.transport.close()
            return resp
        stats.completed += 1
        return web.json_response({"text": text, "usage": {"type": "duration", "seconds": 1}})
    finally:
        stats.open -= 1
        stats.notify()


async def _transcription_stream(request: web.Request, text: str, fault: str) -> web.StreamResponse:
    stats = request.app[STATS]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    words = text.split(" ")
    for i, word in enumerate(words):
        delta = word if i == 0 else " " + word
        event = {"type": "transcript.text.delta", "delta": delta}
        await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        if fault == "drop" and i == len(words) // 2:
            if request.transport is not None:
                request.transport.close()
            return resp
    done = {"type": "transcript.text.done", "text": text, "usage": {"type": "tokens"}}
    await resp.write(f"data: {json.dumps(done)}\n\n".encode())
    await resp.write_eof()
    stats.completed += 1
    return resp


def make_fake_transcription_app(script: FakeSttScript | None = None) -> web.Application:
    """The fake OpenAI transcription app (`app[SCRIPT]`, `app[STATS]`)."""
    app = fake_app(SCRIPT, script or FakeSttScript(), STATS, FakeSttStats())
    app.router.add_post("/v1/audio/transcriptions", _transcriptions)
    return app


# ---- Deepgram /v1/listen ---------------------------------------------------------------


class _DeepgramSession:
    """One fake Deepgram stream: audio in, Results out."""

    def __init__(
        self, ws: web.WebSocketResponse, script: FakeSttScript, rate: int, interim: bool, fault: str
    ) -> None:
        self.ws = ws
        self.script = script
        self.rate = rate
        self.interim = interim
        self.fault = fault
        self.pending = bytearray()
        self.received = bytearray()
        self.offset_samples = 0  # start of `pending` in the stream
        self.finals = 0

    def _results(self, pcm: bytes, *, final: bool, from_finalize: bool = False) -> dict[str, Any]:
        samples = len(pcm) // 2
        text = self.script.text if self.script.text is not None else describe_pcm(pcm)
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": samples / self.rate,
            "start": self.offset_samples / self.rate,
            "is_final": final,
            "speech_final": False,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [{"transcript": text if samples else "", "confidence": 0.99}]
            },
            "metadata": {"request_id": "fake", "model_info": {"name": "fake-nova"}},
        }

    async def _send(self, message: dict[str, Any]) -> None:
        if self.script.delay:
            await asyncio.sleep(self.script.delay)
        await self.ws.send_str(json.dumps(message))

    async def final(self, pcm: bytes, *, from_finalize: bool = False) -> bool:
        """Send a final result for `pcm`; False when the `drop` fault cut the socket."""
        await self._send(self._results(pcm, final=True, from_finalize=from_finalize))
        self.offset_samples += len(pcm) // 2
        self.finals += 1
        return not (self.fault == "drop" and self.finals >= self.script.drop_after_finals)

    async def audio(self, data: bytes) -> bool:
        """Take audio; send interims / finals; False when the socket was dropped."""
        self.received += data
        self.pending += data
        every = self.script.final_every_ms * self.rate // 1000 * 2
        while len(self.pending) >= every:
            piece = bytes(self.pending[:every])
            del self.pending[:every]
            if not await self.final(piece):
                return False
        if self.interim and self.pending:
            await self._send(self._results(bytes(self.pending), final=False))
        return True

    async def flush(self) -> bool:
        """Finalize: the pending audio as one final result (if any)."""
        if not self.pending:
            return True
        piece = bytes(self.pending)
        self.pending.clear()
        return await self.final(piece, from_finalize=True)


async def _listen(request: web.Request) -> web.StreamResponse:
    app = request.app
    script, stats = app[SCRIPT], app[STATS]
    stats.requests += 1
    stats.last_headers = dict(request.headers)
    stats.last_query = dict(request.query)
    fault = _fault(request, script)
    if fault == "refuse":
        return refuse(request)
    if not _auth_ok(request, script, "Token"):
        return web.json_response(
            {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}, status=401
        )
    if fault in _STATUS:
        status = _STATUS[fault]
        headers = (
            {"Retry-After": script.retry_after} if status == 429 and script.retry_after else {}
        )
        body = {"err_code": f"HTTP_{status}", "err_msg": "fake failure"}
        return web.json_response(body, status=status, headers=headers)
    if request.query.get("encoding") != "linear16":
        return web.json_response({"err_code": "Bad Request", "err_msg": "encoding"}, status=400)
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    stats.open += 1
    stats.notify()
    session = _DeepgramSession(
        ws,
        script,
        int(request.query.get("sample_rate", "16000")),
        request.query.get("interim_results") == "true",
        fault,
    )
    finished = False
    try:
        if fault == "empty":
            await ws.close()
            finished = True
            return ws
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                if not await session.audio(msg.data):
                    break
            elif msg.type is WSMsgType.TEXT:
                kind = json.loads(msg.data).get("type")
                if kind == "KeepAlive":
                    stats.keepalives += 1
                    stats.notify()
                    continue
                if fault == "stall":
                    continue  # swallows Finalize and CloseStream: no final result, ever
                if fault == "malformed":
                    await ws.send_str("{not json")
                    continue
                if kind == "Finalize":
                    stats.finalizes += 1
                    if not await session.flush():
                        break
                elif kind == "CloseStream":
                    if not await session.flush():
                        break
                    await ws.send_str(
                        json.dumps(
                            {
                                "type": "Metadata",
                                "request_id": "fake",
                                "duration": len(session.received) / 2 / session.rate,
                                "channels": 1,
                            }
                        )
                    )
                    await ws.close()
                    finished = True
        if fault == "drop" and not finished and request.transport is not None:
            request.transport.close()  # cut without a close frame
        return ws
    finally:
        stats.audio.append(bytes(session.received))
        stats.open -= 1
        if finished:
            stats.completed += 1
        elif fault != "drop" and not app[STOPPING].is_set():
            stats.closed_by_client += 1
        stats.notify()


def make_fake_deepgram_app(script: FakeSttScript | None = None) -> web.Application:
    """The fake Deepgram app (`app[SCRIPT]`, `app[STATS]`)."""
    app = fake_app(SCRIPT, script or FakeSttScript(), STATS, FakeSttStats())
    app.router.add_get("/v1/listen", _listen)
    return app


# ---- running them ------------------------------------------------------------------


@dataclass(frozen=True)
class FakeStt(RunningFake[FakeSttScript, FakeSttStats]):
    """A running fake: `url` is the HTTP base (…/v1), `ws_url` the websocket origin."""

    ws_url: str
    script_key = SCRIPT
    stats_key = STATS


@asynccontextmanager
async def _serve(app: web.Application, host: str, port: int) -> AsyncIterator[FakeStt]:
    async with serve_app(app, host, port, shutdown_timeout=1.0) as root:
        ws_url = root.replace("http://", "ws://", 1)
        yield FakeStt(url=f"{root}/v1", ws_url=ws_url, app=app)


@asynccontextmanager
async def run_fake_transcription(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeSttScript | None = None
) -> AsyncIterator[FakeStt]:
    """Serve the fake OpenAI transcription API for the `async with` body."""
    async with _serve(make_fake_transcription_app(script), host, port) as fake:
        yield fake


@asynccontextmanager
async def run_fake_deepgram(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeSttScript | None = None
) -> AsyncIterator[FakeStt]:
    """Serve the fake Deepgram live API for the `async with` body."""
    async with _serve(make_fake_deepgram_app(script), host, port) as fake:
        yield fake
