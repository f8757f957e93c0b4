"""Speech provider adapters against the fake vendors (and the real local engine)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from config.models import ClientConfig, ElevenLabsConfig, EspeakConfig, OpenAISpeechConfig
from fakes.tts_servers import (
    FakeSpeechServer,
    expected_bytes,
    run_fake_elevenlabs,
    run_fake_openai_speech,
)
from providers.tts_elevenlabs import ElevenLabsSpeechProvider, pcm_rate_for
from providers.tts_local import LocalSpeechProvider
from providers.tts_openai import OpenAISpeechProvider
from providers.tts_types import PcmChunk, SpeechProvider, SpeechRequest
from providers.types import ErrorCategory, ProviderError

CLIENT = ClientConfig(connect_timeout=1.0)
SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeSpeechServer]:
    async with run_fake_openai_speech() as fake:
        yield fake


@pytest.fixture
async def fake_eleven() -> AsyncIterator[FakeSpeechServer]:
    async with run_fake_elevenlabs() as fake:
        yield fake


def request(text: str = SENTENCE, voice: str | None = None, rate: int = 24000) -> SpeechRequest:
    return SpeechRequest(text, voice, rate, "ctx-1")


async def collect(provider: SpeechProvider, req: SpeechRequest) -> list[PcmChunk]:
    return [chunk async for chunk in provider.synthesize(req)]


async def failure(provider: SpeechProvider, req: SpeechRequest) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await collect(provider, req)
    return caught.value


def openai(
    fake: FakeSpeechServer, session: aiohttp.ClientSession, **params: Any
) -> OpenAISpeechProvider:
    config = OpenAISpeechConfig(
        base_url=fake.url, model="tts-fake", voice="alloy", api_key="sk-test-SECRET-1234",
        default_params=params,
    )  # fmt: skip
    return OpenAISpeechProvider(config, CLIENT, session)


def eleven(
    fake: FakeSpeechServer,
    session: aiohttp.ClientSession,
    transport: str = "websocket",
    **params: Any,
) -> ElevenLabsSpeechProvider:
    config = ElevenLabsConfig.model_validate(
        {
            "base_url": fake.url,
            "ws_url": fake.ws_url,
            "transport": transport,
            "voice_id": "v-1",
            "api_key": "xi-SECRET-5678",
            "default_params": params,
        }
    )
    return ElevenLabsSpeechProvider(config, CLIENT, session)


# ---- OpenAI -------------------------------------------------------------------------------


async def test_openai_streams_pcm_at_24k(
    fake_openai: FakeSpeechServer, session: aiohttp.ClientSession
) -> None:
    provider = openai(fake_openai, session, speed=1.25, response_format="mp3")
    assert provider.sample_rate_for(16000) == 24000
    chunks = await collect(provider, request(voice="nova"))
    assert all(c.sample_rate == 24000 for c in chunks) and chunks
    assert sum(c.samples.size for c in chunks) * 2 == expected_bytes(SENTENCE, 24000)
    body = fake_openai.stats.last_body
    assert body == {
        "speed": 1.25,
        "model": "tts-fake",
        "input": SENTENCE,
        "voice": "nova",
        "response_format": "pcm",
    }
    assert fake_openai.stats.last_headers["Authorization"] == "Bearer sk-test-SECRET-1234"


@pytest.mark.parametrize(
    ("fault", "category", "status"),
    [
        ("http_429", ErrorCategory.RATE_LIMITED, 429),
        ("http_401", ErrorCategory.AUTH, 401),
        ("http_500", ErrorCategory.TRANSIENT, 500),
        ("http_400", ErrorCategory.BAD_REQUEST, 400),
        ("refuse", ErrorCategory.TRANSIENT, None),
        ("truncated", ErrorCategory.PROTOCOL, None),
        ("fail_mid_stream", ErrorCategory.PROTOCOL, None),
        ("malformed", ErrorCategory.PROTOCOL, 200),
        ("empty", ErrorCategory.EMPTY_OUTPUT, None),
        ("half_sample", ErrorCategory.PROTOCOL, None),
    ],
)
async def test_openai_faults_are_classified(
    fake_openai: FakeSpeechServer,
    session: aiohttp.ClientSession,
    fault: str,
    category: ErrorCategory,
    status: int | None,
) -> None:
    fake_openai.script.fault = fault  # type: ignore[assignment]
    error = await failure(openai(fake_openai, session), request())
    assert error.category is category, error
    assert error.status == status
    assert "SECRET" not in str(error)
    if fault == "http_429":
        assert error.retry_after == 1.0


async def test_openai_mid_stream_failure_comes_after_some_audio(
    fake_openai: FakeSpeechServer, session: aiohttp.ClientSession
) -> None:
    fake_openai.script.fault = "fail_mid_stream"
    got: list[PcmChunk] = []
    with pytest.raises(ProviderError):
        async for chunk in openai(fake_openai, session).synthesize(request()):
            got.append(chunk)
    assert got  # audio came first, then the failure


async def test_closing_the_openai_stream_closes_the_upstream(
    fake_openai: FakeSpeechServer, session: aiohttp.ClientSession
) -> None:
    fake_openai.script.delay = 0.05
    stream = openai(fake_openai, session).synthesize(request())
    await anext(stream)
    await stream.aclose()
    await fake_openai.stats.wait_stream_closed()


# ---- ElevenLabs -----------------------------------------------------------------------------


def test_elevenlabs_picks_the_pcm_rate_for_the_client() -> None:
    assert [pcm_rate_for(r) for r in (8000, 16000, 16001, 22050, 24000, 48000)] == [
        16000,
        16000,
        22050,
        22050,
        24000,
        24000,
    ]


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_elevenlabs_streams_pcm(
    fake_eleven: FakeSpeechServer, session: aiohttp.ClientSession, transport: str
) -> None:
    provider = eleven(fake_eleven, session, transport, voice_settings={"stability": 0.5})
    chunks = await collect(provider, request(rate=16000, voice="v-2"))
    assert all(c.sample_rate == 16000 for c in chunks)
    assert sum(c.samples.size for c in chunks) * 2 == expected_bytes(SENTENCE, 16000)
    stats = fake_eleven.stats
    assert stats.last_headers["xi-api-key"] == "xi-SECRET-5678"
    assert stats.last_query["output_format"] == "pcm_16000"
    assert stats.texts == [SENTENCE]
    if transport == "http":
        assert stats.last_path == "/v1/text-to-speech/v-2/stream"
        assert stats.last_body == {
            "voice_settings": {"stability": 0.5},
            "text": SENTENCE,
            "model_id": "eleven_flash_v2_5",
        }
    else:
        assert stats.last_path == "/v1/text-to-speech/v-2/stream-input"
        assert stats.last_query["model_id"] == "eleven_flash_v2_5"
        assert stats.ws_messages == [
            {"text": " ", "voice_settings": {"stability": 0.5}},
            {"text": SENTENCE + " ", "flush": True},
            {"text": ""},
        ]
        await stats.wait_until(lambda: stats.streams_completed == 1)


@pytest.mark.parametrize(
    ("fault", "category"),
    [
        ("http_401", ErrorCategory.AUTH),
        ("http_429", ErrorCategory.RATE_LIMITED),
        ("http_500", ErrorCategory.TRANSIENT),
        ("refuse", ErrorCategory.TRANSIENT),
        ("error_event", ErrorCategory.RATE_LIMITED),
        ("malformed", ErrorCategory.PROTOCOL),
        ("drop", ErrorCategory.TRANSIENT),
        ("fail_mid_stream", ErrorCategory.TRANSIENT),
        ("empty", ErrorCategory.EMPTY_OUTPUT),
        ("half_sample", ErrorCategory.PROTOCOL),
    ],
)
async def test_elevenlabs_websocket_faults_are_classified(
    fake_eleven: FakeSpeechServer,
    session: aiohttp.ClientSession,
    fault: str,
    category: ErrorCategory,
) -> None:
    fake_eleven.script.fault = fault  # type: ignore[assignment]
    error = await failure(eleven(fake_eleven, session), request())
    assert error.category is category, error
    assert "SECRET" not in str(error)


@pytest.mark.parametrize(
    ("fault", "category"),
    [
        ("http_401", ErrorCategory.AUTH),
        ("http_429", ErrorCategory.RATE_LIMITED),
        ("truncated", ErrorCategory.PROTOCOL),
        ("malformed", ErrorCategory.PROTOCOL),
        ("empty", ErrorCategory.EMPTY_OUTPUT),
    ],
)
async def test_elevenlabs_http_faults_are_classified(
    fake_eleven: FakeSpeechServer,
    session: aiohttp.ClientSession,
    fault: str,
    category: ErrorCategory,
) -> None:
    fake_eleven.script.fault = fault  # type: ignore[assignment]
    error = await failure(eleven(fake_eleven, session, "http"), request())
    assert error.category is category, error
    if fault == "http_401":
        assert "invalid_api_key: Invalid API key" in str(error)


async def test_closing_the_elevenlabs_websocket_is_seen_upstream(
    fake_eleven: FakeSpeechServer, session: aiohttp.ClientSession
) -> None:
    fake_eleven.script.delay = 0.05
    stream = eleven(fake_eleven, session).synthesize(request())
    await anext(stream)
    await stream.aclose()
    await fake_eleven.stats.wait_stream_closed()
    await fake_eleven.stats.wait_idle()


async def test_the_fake_closes_an_idle_stream_input_and_a_space_keeps_it_open(
    fake_eleven: FakeSpeechServer, session: aiohttp.ClientSession
) -> None:
    url = f"{fake_eleven.ws_url}/v1/text-to-speech/v/stream-input"
    query = {"output_format": "pcm_16000", "inactivity_timeout": "0.2"}
    async with session.ws_connect(url, params=query) as ws:
        await ws.send_json({"text": " "})
        for _ in range(3):
            await asyncio.sleep(0.1)
            await ws.send_json({"text": " "})  # keep-alive
        assert not ws.closed
        msg = await ws.receive(timeout=2)
        assert msg.json()["error"] == "input_timeout_exceeded"


# ---- the local engine ------------------------------------------------------------------------


async def test_local_engine_streams_and_cancels_mid_sentence() -> None:
    provider = LocalSpeechProvider(EspeakConfig())
    try:
        chunks = await collect(provider, request())
        assert len(chunks) > 5 and all(c.sample_rate == 22050 for c in chunks)
        audio = np.concatenate([c.samples for c in chunks])
        assert audio.size / 22050 > 1.5
        full = provider.stats.chunks
        stream = provider.synthesize(request(" ".join([SENTENCE] * 20)))
        await anext(stream)
        await stream.aclose()
        for _ in range(100):
            if provider.stats.jobs_aborted:
                break
            await asyncio.sleep(0.01)
        assert provider.stats.jobs_aborted == 1
        assert provider.stats.chunks - full < 20 * len(chunks) // 2  # stopped early
    finally:
        await provider.aclose()


async def test_local_engine_serializes_concurrent_sentences() -> None:
    provider = LocalSpeechProvider(EspeakConfig())
    try:
        results = await asyncio.gather(
            *(collect(provider, request(f"Number {i}.")) for i in range(5))
        )
        assert all(r for r in results)
        assert provider.stats.jobs_finished == 5
    finally:
        await provider.aclose()


async def test_local_engine_voice_errors() -> None:
    provider = LocalSpeechProvider(EspeakConfig())
    bad_config = LocalSpeechProvider(EspeakConfig(voice="xx-nope"))
    try:
        error = await failure(provider, request(voice="xx-nope"))
        assert error.category is ErrorCategory.BAD_REQUEST and not error.retryable
        error = await failure(bad_config, request())
        assert error.category is ErrorCategory.TRANSIENT and error.retryable
        assert await collect(provider, request("Still fine."))
    finally:
        await provider.aclose()
        await bad_config.aclose()
