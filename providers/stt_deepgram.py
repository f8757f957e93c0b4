"""Deepgram's streaming websocket (`/v1/listen`) as an STT adapter.

Flow: an `SttRequest` flows in; the adapter opens
`{ws_url}/v1/listen?model=...&encoding=linear16&sample_rate=...&channels=1&interim_results=...`
with `Authorization: Token <key>` and streams the segment's PCM as binary
frames as it arrives (live, while the person is still speaking). A
`{"type": "KeepAlive"}` text frame goes out whenever no audio was sent for
`keepalive_seconds` (Deepgram closes a stream idle for 10 s). When the segment
ends it sends `{"type": "Finalize"}` (flush what is buffered) and
`{"type": "CloseStream"}`; Deepgram answers with its last results and a
`Metadata` message, then closes.

`Results` messages map onto `SttEvent`s: `is_final` (or `speech_final`) ->
`SttCommitted(all final text so far, through_ms=(start + duration) * 1000)`;
otherwise, when interim results are on, `SttInterim(final text + the interim
text)`; the `Metadata` after `CloseStream` (or a normal close after it) ->
`SttFinal(all final text)`. A socket that closes before that, a refused
handshake (classified by its HTTP status), an `Error` message or a malformed
message is a `ProviderError`; the listen pipeline then replays only the audio
after `through_ms` to the next model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp

from config.models import ClientConfig, DeepgramConfig
from providers.http_errors import error_from_exception, parse_retry_after, redact
from providers.stt_types import (
    LiveReader,
    SttCommitted,
    SttEvent,
    SttFinal,
    SttInterim,
    SttRequest,
)
from providers.types import ErrorCategory, ProviderError, classify_http_status

SAMPLE_RATE = 16000
KEEPALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})
DEFAULT_KEEPALIVE_SECONDS = 4.0


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _join(parts: list[str]) -> str:
    return " ".join(p for p in parts if p)


class _SendState:
    """What the sender task did: whether CloseStream went out, and how it failed."""

    def __init__(self) -> None:
        self.closing = False
        self.error: BaseException | None = None
        self.keepalives = 0


class DeepgramProvider:
    """An `SttProvider` over Deepgram's live transcription websocket."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        config: DeepgramConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "deepgram",
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.config = config
        self._session = session
        self._connect_timeout = client.connect_timeout
        self._key = config.api_key.get_secret_value()
        self._label = f"{provider_id}/{config.model}"
        self.keepalive_seconds = keepalive_seconds

    def describe(self) -> dict[str, Any]:
        """Model facts for the router listing (no key)."""
        return {"engine": "deepgram", "model": self.model_name, "sample_rate": self.sample_rate}

    def url(self, request: SttRequest) -> str:
        """The `/v1/listen` URL with this request's query parameters."""
        params: dict[str, str] = {
            key: _query_value(value)
            for key, value in self.config.default_params.items()
            if value is not None
        }
        params.update(
            {
                "model": self.model_name,
                "encoding": "linear16",
                "sample_rate": str(request.sample_rate),
                "channels": "1",
                "interim_results": _query_value(request.interim_results),
            }
        )
        if request.language:
            params["language"] = request.language
        return f"{self.config.ws_url.rstrip('/')}/v1/listen?{urlencode(params)}"

    async def _connect(self, request: SttRequest) -> aiohttp.ClientWebSocketResponse:
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await self._session.ws_connect(
                    self.url(request),
                    headers={"Authorization": f"Token {self._key}"},
                    autoping=True,
                )
        except aiohttp.WSServerHandshakeError as error:
            status = error.status
            retry_after = (
                parse_retry_after(error.headers.get("Retry-After")) if error.headers else None
            )
            raise ProviderError(
                classify_http_status(status),
                f"{self._label}: websocket handshake refused: "
                f"{redact(error.message or '', (self._key,))}",
                status=status,
                retry_after=retry_after,
            ) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise error_from_exception(error, self._label) from error

    async def _send(
        self, ws: aiohttp.ClientWebSocketResponse, request: SttRequest, state: _SendState
    ) -> None:
        reader = LiveReader(request)
        try:
            while True:
                chunk = await reader.next(self.keepalive_seconds)
                if chunk is None:
                    break
                if chunk:
                    await ws.send_bytes(chunk)
                else:
                    state.keepalives += 1
                    await ws.send_str(KEEPALIVE)
            await ws.send_str(FINALIZE)
            await ws.send_str(CLOSE_STREAM)
            state.closing = True
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as error:
            state.error = error

    def _parse(self, raw: str) -> dict[str, Any]:
        try:
            message = json.loads(raw)
        except ValueError as error:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: a message is not JSON"
            ) from error
        if not isinstance(message, dict):
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: a message is not an object"
            )
        return message

    def _result(self, message: dict[str, Any]) -> tuple[str, bool, int]:
        """(transcript, is final, end of the result in ms) of a `Results` message."""
        try:
            alternative = message["channel"]["alternatives"][0]
            transcript = alternative["transcript"]
            end = float(message.get("start", 0.0)) + float(message.get("duration", 0.0))
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: malformed Results message"
            ) from error
        if not isinstance(transcript, str):
            raise ProviderError(ErrorCategory.PROTOCOL, f"{self._label}: transcript is not text")
        final = bool(message.get("is_final")) or bool(message.get("speech_final"))
        return transcript.strip(), final, round(end * 1000)

    async def transcribe(self, request: SttRequest) -> AsyncIterator[SttEvent]:
        """Stream the segment live; yield interim / committed results, then the final."""
        ws = await self._connect(request)
        state = _SendState()
        sender = asyncio.get_running_loop().create_task(self._send(ws, request, state))
        finals: list[str] = []
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                message = self._parse(msg.data)
                kind = message.get("type")
                if kind == "Results":
                    transcript, final, end_ms = self._result(message)
                    if final:
                        finals.append(transcript)
                        yield SttCommitted(_join(finals), end_ms)
                    elif request.interim_results and transcript:
                        yield SttInterim(_join([*finals, transcript]))
                elif kind == "Metadata" and state.closing:
                    yield SttFinal(_join(finals))
                    return
                elif kind == "Error":
                    detail = message.get("description") or message.get("message") or "error"
                    raise ProviderError(
                        ErrorCategory.TRANSIENT,
                        f"{self._label}: {redact(str(detail), (self._key,))}",
                    )
            if state.closing and ws.close_code == aiohttp.WSCloseCode.OK:
                yield SttFinal(_join(finals))
                return
            cause = f" ({state.error!r})" if state.error is not None else ""
            raise ProviderError(
                ErrorCategory.TRANSIENT,
                f"{self._label}: the websocket closed mid-stream (code {ws.close_code}){cause}",
            )
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await ws.close()

    async def aclose(self) -> None:
        """Nothing to release: each segment's socket closes with its attempt."""
