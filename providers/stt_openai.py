"""OpenAI `POST /v1/audio/transcriptions` (and servers that speak it) as an STT adapter.

Flow: an `SttRequest` flows in; once the segment has ended its PCM is wrapped
as a WAV file and posted as multipart/form-data (`file`, `model`, `language`,
`response_format=json`, plus the model's `default_params`). Out come:

- without interim results: the JSON body `{"text": ...}` -> one `SttFinal`;
- with interim results (`stream=true`): the SSE events
  `transcript.text.delta {delta}` -> `SttInterim` (the text so far) and
  `transcript.text.done {text}` -> `SttFinal`.

Failures leave as `ProviderError`: HTTP errors classified by status (429 with
Retry-After), transport errors, a malformed body or a stream that ends before
`transcript.text.done` (PROTOCOL), an empty 200 body (EMPTY_OUTPUT). A `{"text":
""}` answer is a valid final transcript (nothing was said).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from audio.pcm import wav_bytes
from config.models import ClientConfig, OpenAITranscriptionConfig
from providers.http_errors import error_from_exception, error_from_response, redact
from providers.sse import SSEDecoder, read_sse_event
from providers.stt_types import SttEvent, SttFinal, SttInterim, SttRequest
from providers.types import ErrorCategory, ProviderError

SAMPLE_RATE = 16000
DONE = "[DONE]"


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value)


class OpenAITranscriptionProvider:
    """An `SttProvider` over OpenAI's transcriptions endpoint."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        config: OpenAITranscriptionConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "openai",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.config = config
        self._session = session
        self._url = config.base_url.rstrip("/") + "/audio/transcriptions"
        self._key = config.api_key.get_secret_value() if config.api_key is not None else None
        self._secrets = (self._key,) if self._key else ()
        self._label = f"{provider_id}/{config.model}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout)

    def describe(self) -> dict[str, Any]:
        """Model and endpoint facts for the router listing (no key)."""
        return {"engine": "openai", "model": self.model_name, "sample_rate": self.sample_rate}

    def form(self, pcm: bytes, request: SttRequest) -> aiohttp.FormData:
        """The multipart body for one segment."""
        params = dict(self.config.default_params)
        params.pop("stream", None)
        form = aiohttp.FormData()
        form.add_field(
            "file",
            wav_bytes(pcm, request.sample_rate),
            filename="segment.wav",
            content_type="audio/wav",
        )
        form.add_field("model", self.model_name)
        if request.language:
            params["language"] = request.language.replace("_", "-").split("-")[0].lower()
        params.setdefault("response_format", "json")
        if request.interim_results:
            params["stream"] = True
        for key, value in params.items():
            if value is not None:
                form.add_field(key, _form_value(value))
        return form

    async def transcribe(self, request: SttRequest) -> AsyncIterator[SttEvent]:
        """Post the whole segment; yield interims (SSE) and the final transcript."""
        pcm = await request.whole()
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        try:
            async with self._session.post(
                self._url, data=self.form(pcm, request), headers=headers, timeout=self._timeout
            ) as resp:
                if resp.status >= 400:
                    raise await error_from_response(resp, self._label, secrets=self._secrets)
                if resp.content_type == "text/event-stream":
                    async for event in self._events(resp, request.interim_results):
                        yield event
                    return
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise error_from_exception(error, self._label) from error
        yield SttFinal(self._text_of(body))

    def _text_of(self, body: bytes) -> str:
        if not body.strip():
            raise ProviderError(ErrorCategory.EMPTY_OUTPUT, f"{self._label}: empty response body")
        try:
            parsed = json.loads(body)
        except ValueError as error:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: response is not JSON"
            ) from error
        text = parsed.get("text") if isinstance(parsed, dict) else None
        if not isinstance(text, str):
            raise ProviderError(ErrorCategory.PROTOCOL, f"{self._label}: response has no text")
        return text.strip()

    async def _events(self, resp: aiohttp.ClientResponse, interim: bool) -> AsyncIterator[SttEvent]:
        decoder = SSEDecoder()
        text = ""
        while True:
            event = await read_sse_event(resp.content, decoder)
            if event is None:
                raise ProviderError(
                    ErrorCategory.PROTOCOL,
                    f"{self._label}: the stream ended before transcript.text.done",
                )
            if event.data.strip() == DONE:
                continue
            try:
                data = json.loads(event.data)
            except ValueError as error:
                raise ProviderError(
                    ErrorCategory.PROTOCOL, f"{self._label}: an SSE event is not JSON"
                ) from error
            if not isinstance(data, dict):
                raise ProviderError(ErrorCategory.PROTOCOL, f"{self._label}: bad SSE event")
            kind = data.get("type")
            if kind == "transcript.text.delta":
                delta = data.get("delta")
                if not isinstance(delta, str):
                    raise ProviderError(ErrorCategory.PROTOCOL, f"{self._label}: delta is not text")
                text += delta
                if interim and text.strip():
                    yield SttInterim(text.strip())
            elif kind == "transcript.text.done":
                final = data.get("text")
                yield SttFinal((final if isinstance(final, str) else text).strip())
                return
            elif kind == "error" or "error" in data:
                problem = data.get("error")
                message = problem.get("message") if isinstance(problem, dict) else problem
                raise ProviderError(
                    ErrorCategory.TRANSIENT,
                    f"{self._label}: {redact(str(message), self._secrets)}",
                )

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session belongs to the app."""
