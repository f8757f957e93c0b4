"""ElevenLabs text-to-speech, streamed as raw PCM, over HTTP or the websocket.

Flow: a `SpeechRequest` (one sentence) flows in; `PcmChunk`s flow out at the PCM
rate picked for the client (`pcm_16000`, `pcm_22050` or `pcm_24000`).

- `transport: http`: `POST {base_url}/v1/text-to-speech/{voice_id}/stream
  ?output_format=pcm_R` with `xi-api-key`, body `{text, model_id, ...}`; the body
  is raw 16-bit little-endian PCM, streamed.
- `transport: websocket` (the `stream-input` protocol): one connection per
  sentence to `{ws_url}/v1/text-to-speech/{voice_id}/stream-input?model_id=M
  &output_format=pcm_R` with `xi-api-key`. Client messages: the initial
  `{"text": " ", ...settings}` (a single space opens the stream; an empty string
  would end it), then `{"text": "<sentence> ", "flush": true}`, then the
  end-of-stream `{"text": ""}`. Server messages: `{"audio": "<base64 PCM>",
  "isFinal": false, "alignment": ...}` per chunk, then `{"isFinal": true}`; a
  failure is `{"error": ..., "message": ..., "code": ...}` and a close. The
  sentence's text is sent at once, so the connection never idles long enough to
  need the " " keep-alive the protocol offers; a socket that closes before
  `isFinal` is a failure.

Failures leave as `ProviderError` (HTTP status / handshake status, vendor error
codes, a connection dropped before the end, an empty stream). Closing the iterator
closes the HTTP response or the websocket at once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import aiohttp

from config.models import ClientConfig, ElevenLabsConfig
from providers.http_errors import (
    MAX_ERROR_BODY_BYTES,
    error_from_exception,
    parse_retry_after,
    redact,
)
from providers.tts_types import PcmChunk, SampleCarry, SpeechRequest, pcm_from_bytes
from providers.types import ErrorCategory, ProviderError, classify_http_status

PCM_RATES: tuple[int, ...] = (16000, 22050, 24000)
AUTH_HEADER = "xi-api-key"
_WS_INIT_KEYS = ("voice_settings", "generation_config", "pronunciation_dictionary_locators")
_WS_QUERY_KEYS = (
    "language_code",
    "enable_logging",
    "enable_ssml_parsing",
    "inactivity_timeout",
    "sync_alignment",
    "auto_mode",
    "apply_text_normalization",
    "seed",
)


def pcm_rate_for(preferred: int) -> int:
    """The lowest ElevenLabs PCM rate at or above `preferred` (24 kHz at most)."""
    for rate in PCM_RATES:
        if preferred <= rate:
            return rate
    return PCM_RATES[-1]


def _detail_message(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return " ".join(text.split())
    if isinstance(parsed, dict):
        detail = parsed.get("detail", parsed)
        if isinstance(detail, dict):
            status = detail.get("status") or detail.get("error")
            message = detail.get("message")
            if isinstance(message, str):
                return f"{status}: {message}" if isinstance(status, str) else message
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return str(detail[0].get("msg", detail[0]))
    return " ".join(text.split())


def _ws_error_category(code: str) -> ErrorCategory:
    lowered = code.lower()
    if "api_key" in lowered or "unauthorized" in lowered or "auth" in lowered:
        return ErrorCategory.AUTH
    if any(word in lowered for word in ("quota", "rate", "max_active", "concurrent", "busy")):
        return ErrorCategory.RATE_LIMITED
    if "timeout" in lowered:
        return ErrorCategory.TIMEOUT
    return ErrorCategory.TRANSIENT


class ElevenLabsSpeechProvider:
    """A `SpeechProvider` for ElevenLabs (HTTP stream or `stream-input` websocket).

    In: the model's `ElevenLabsConfig` (its `transport` picks the protocol;
    `default_params` go into the body / the websocket's first message and query),
    its client deadlines, the app's shared `aiohttp.ClientSession`.
    """

    def __init__(
        self,
        config: ElevenLabsConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "elevenlabs",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.transport = config.transport
        self._config = config
        self._session = session
        self._key = config.api_key.get_secret_value()
        self._label = f"{provider_id}/{config.model}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout)

    def sample_rate_for(self, preferred: int) -> int:
        """16, 22.05 or 24 kHz: the lowest that does not lose the client's bandwidth."""
        return pcm_rate_for(preferred)

    def synthesize(self, request: SpeechRequest) -> AsyncGenerator[PcmChunk, None]:
        """Yield one sentence's PCM over the configured transport."""
        if self.transport == "http":
            return self._http(request)
        return self._websocket(request)

    def _voice(self, request: SpeechRequest) -> str:
        return request.voice or self._config.voice_id

    def _error(self, message: str, category: ErrorCategory, **extra: Any) -> ProviderError:
        return ProviderError(category, f"{self._label}: {redact(message, [self._key])}", **extra)

    async def _http(self, request: SpeechRequest) -> AsyncGenerator[PcmChunk, None]:
        """HTTP stream: body in, raw PCM chunks out as they arrive."""
        rate = pcm_rate_for(request.sample_rate)
        url = f"{self._config.base_url.rstrip('/')}/v1/text-to-speech/{self._voice(request)}/stream"
        body: dict[str, Any] = dict(self._config.default_params)
        body["text"] = request.text
        body["model_id"] = self._config.model
        carry = SampleCarry()
        produced = False
        finished = False
        try:
            async with self._session.post(
                url,
                params={"output_format": f"pcm_{rate}"},
                json=body,
                headers={AUTH_HEADER: self._key},
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raw = await resp.content.read(MAX_ERROR_BODY_BYTES)
                    raise self._error(
                        _detail_message(raw) or resp.reason or "error",
                        classify_http_status(resp.status),
                        status=resp.status,
                        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                    )
                if resp.content_type.startswith(("application/json", "text/")):
                    raw = await resp.content.read(MAX_ERROR_BODY_BYTES)
                    raise self._error(
                        f"expected audio, got {resp.content_type}: {_detail_message(raw)}",
                        ErrorCategory.PROTOCOL,
                    )
                try:
                    while data := await resp.content.readany():
                        whole = carry.push(data)
                        if whole:
                            produced = True
                            yield pcm_from_bytes(whole, rate)
                    finished = True
                finally:
                    if not finished:
                        resp.close()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc
        if carry.pending:
            raise self._error("audio ended in the middle of a sample", ErrorCategory.PROTOCOL)
        if not produced:
            raise self._error("no audio returned", ErrorCategory.EMPTY_OUTPUT)

    def _ws_url(self, request: SpeechRequest, rate: int) -> tuple[str, dict[str, str]]:
        base = self._config.ws_url.rstrip("/")
        url = f"{base}/v1/text-to-speech/{self._voice(request)}/stream-input"
        query = {"model_id": self._config.model, "output_format": f"pcm_{rate}"}
        for key in _WS_QUERY_KEYS:
            value = self._config.default_params.get(key)
            if value is not None:
                query[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return url, query

    def ws_messages(self, text: str) -> Iterable[dict[str, Any]]:
        """The client messages for one sentence: open, the text (flushed), end of stream."""
        opening: dict[str, Any] = {"text": " "}
        for key in _WS_INIT_KEYS:
            if key in self._config.default_params:
                opening[key] = self._config.default_params[key]
        return (opening, {"text": text.strip() + " ", "flush": True}, {"text": ""})

    async def _websocket(self, request: SpeechRequest) -> AsyncGenerator[PcmChunk, None]:
        """stream-input websocket: messages out, base64 PCM in until `isFinal`."""
        rate = pcm_rate_for(request.sample_rate)
        url, query = self._ws_url(request, rate)
        carry = SampleCarry()
        produced = False
        try:
            async with self._session.ws_connect(
                url,
                params=query,
                headers={AUTH_HEADER: self._key},
                timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
                heartbeat=None,
                autoping=True,
            ) as ws:
                for message in self.ws_messages(request.text):
                    await ws.send_str(json.dumps(message))
                async for msg in ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        raise self._error(
                            f"unexpected {msg.type.name} message", ErrorCategory.PROTOCOL
                        )
                    event = self._parse(msg.data)
                    audio = event.get("audio")
                    if isinstance(audio, str) and audio:
                        whole = carry.push(self._decode(audio))
                        if whole:
                            produced = True
                            yield pcm_from_bytes(whole, rate)
                    if event.get("isFinal") is True:
                        break
                else:
                    code = ws.close_code
                    raise self._error(
                        f"the websocket closed before isFinal (code {code})",
                        ErrorCategory.TRANSIENT,
                    )
        except aiohttp.WSServerHandshakeError as exc:
            raise self._error(
                f"websocket handshake refused: HTTP {exc.status} {exc.message}",
                classify_http_status(exc.status),
                status=exc.status,
                retry_after=parse_retry_after(
                    exc.headers.get("Retry-After") if exc.headers else None
                ),
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc
        if carry.pending:
            raise self._error("audio ended in the middle of a sample", ErrorCategory.PROTOCOL)
        if not produced:
            raise self._error("the stream ended with no audio", ErrorCategory.EMPTY_OUTPUT)

    def _parse(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise self._error(
                f"message is not JSON: {data[:100]!r}", ErrorCategory.PROTOCOL
            ) from exc
        if not isinstance(event, dict):
            raise self._error("message is not a JSON object", ErrorCategory.PROTOCOL)
        error = event.get("error")
        if error:
            code = str(error)
            message = event.get("message")
            text = f"{code}: {message}" if isinstance(message, str) else code
            raise self._error(text, _ws_error_category(code))
        return event

    def _decode(self, audio: str) -> bytes:
        try:
            return base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self._error("audio is not valid base64", ErrorCategory.PROTOCOL) from exc

    async def aclose(self) -> None:
        """Nothing to release: connections are per sentence on the shared session."""
