"""OpenAI text-to-speech: `POST {base_url}/audio/speech`, streamed raw PCM.

Flow: a `SpeechRequest` (one sentence) flows in; the adapter posts
`{model, input, voice, response_format: "pcm", ...default_params}` with
`Authorization: Bearer <key>`; the response body is 16-bit little-endian mono PCM
at 24 kHz, streamed with chunked transfer encoding; `PcmChunk`s flow out as the
body arrives (re-aligned on sample boundaries).

Failures leave as `ProviderError`: HTTP errors by status (429 with Retry-After),
a JSON or text body where audio was expected is PROTOCOL, a body cut off
mid-transfer is PROTOCOL, an empty body is EMPTY_OUTPUT. Closing the iterator
closes the HTTP response at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from config.models import ClientConfig, OpenAISpeechConfig
from providers.http_errors import error_from_exception, error_from_response
from providers.tts_types import PcmChunk, SampleCarry, SpeechRequest, pcm_from_bytes
from providers.types import ErrorCategory, ProviderError

OPENAI_PCM_RATE = 24000
READ_BYTES = 8192


class OpenAISpeechProvider:
    """A `SpeechProvider` for OpenAI's (or a compatible server's) `/audio/speech`.

    In: the model's `OpenAISpeechConfig`, its client deadlines and the app's shared
    `aiohttp.ClientSession`. Out: PCM chunks at 24 kHz per sentence.
    """

    def __init__(
        self,
        config: OpenAISpeechConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "openai",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self._config = config
        self._session = session
        key = config.api_key.get_secret_value() if config.api_key is not None else None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._secrets = (key,) if key else ()
        self._url = f"{config.base_url.rstrip('/')}/audio/speech"
        self._label = f"{provider_id}/{config.model}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout)

    def sample_rate_for(self, preferred: int) -> int:
        """OpenAI's `pcm` is always 24 kHz."""
        return OPENAI_PCM_RATE

    def request_body(self, request: SpeechRequest) -> dict[str, Any]:
        """The JSON body: default params, then the fields nothing overrides."""
        body: dict[str, Any] = dict(self._config.default_params)
        body["model"] = self._config.model
        body["input"] = request.text
        body["voice"] = request.voice or self._config.voice
        body["response_format"] = "pcm"
        body.pop("stream_format", None)  # "sse" would wrap the audio in JSON events
        return body

    async def synthesize(self, request: SpeechRequest) -> AsyncGenerator[PcmChunk, None]:
        """Stream one sentence's audio.

        SpeechRequest in; `PcmChunk`s (24 kHz) out as the body arrives.

            vendor body: -[4096 B]-[4095 B]-[1 B]-|
            out:         -chunk----chunk----chunk-|
        """
        carry = SampleCarry()
        produced = False
        finished = False
        try:
            async with self._session.post(
                self._url,
                json=self.request_body(request),
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    raise await error_from_response(resp, self._label, secrets=self._secrets)
                kind = resp.content_type
                if kind.startswith(("application/json", "text/")):
                    raise await self._unexpected_body(resp)
                try:
                    while True:
                        data = await resp.content.readany()
                        if not data:
                            break
                        whole = carry.push(data)
                        if whole:
                            produced = True
                            yield pcm_from_bytes(whole, OPENAI_PCM_RATE)
                    finished = True
                finally:
                    if not finished:
                        resp.close()  # abandoned or broken: never reuse this connection
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc
        if carry.pending:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: audio ended in the middle of a sample"
            )
        if not produced:
            raise ProviderError(ErrorCategory.EMPTY_OUTPUT, f"{self._label}: no audio returned")

    async def _unexpected_body(self, resp: aiohttp.ClientResponse) -> ProviderError:
        error = await error_from_response(resp, self._label, secrets=self._secrets)
        return ProviderError(
            ErrorCategory.PROTOCOL,
            f"expected audio, got {resp.content_type}: {error.message}",
            status=resp.status,
        )

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is shared and owned by the app."""
