"""STT adapters against fake vendors on 127.0.0.1 (and the real local engine)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from config.models import (
    ClientConfig,
    DeepgramConfig,
    OpenAITranscriptionConfig,
    PocketsphinxConfig,
)
from fakes.stt_servers import (
    FakeStt,
    describe_pcm,
    pcm_totals,
    run_fake_deepgram,
    run_fake_transcription,
)
from providers.stt_deepgram import DeepgramProvider
from providers.stt_local import PocketsphinxProvider
from providers.stt_openai import OpenAITranscriptionProvider
from providers.stt_types import (
    SegmentAudio,
    SttCommitted,
    SttEvent,
    SttFinal,
    SttInterim,
    SttRequest,
)
from providers.types import ErrorCategory, ProviderError
from tests.speech_audio import build_dict, build_lm, silence, speech_16k, synthesize

CLIENT = ClientConfig(connect_timeout=1.0)
KEY = "dg-secret-key-1234"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeStt]:
    async with run_fake_transcription() as fake:
        fake.script.api_key = "sk-test-1234"
        yield fake


@pytest.fixture
async def deepgram_fake() -> AsyncIterator[FakeStt]:
    async with run_fake_deepgram() as fake:
        fake.script.api_key = KEY
        yield fake


def pcm_of(ms: int, seed: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-3000, 3000, size=16 * ms, dtype=np.int16).tobytes()


def finished_segment(pcm: bytes) -> SegmentAudio:
    segment = SegmentAudio(0, 300, 0, 16000)
    segment.append(pcm)
    segment.finish(len(pcm) // 32 - 300, len(pcm) // 32)
    return segment


async def collect(events: AsyncIterator[SttEvent]) -> list[SttEvent]:
    return [event async for event in events]


def openai(fake: FakeStt, session: aiohttp.ClientSession) -> OpenAITranscriptionProvider:
    config = OpenAITranscriptionConfig(base_url=fake.url, api_key="sk-test-1234")  # type: ignore[arg-type]
    return OpenAITranscriptionProvider(config, CLIENT, session)


def deepgram(
    fake: FakeStt, session: aiohttp.ClientSession, keepalive: float = 4.0
) -> DeepgramProvider:
    config = DeepgramConfig(ws_url=fake.ws_url, api_key=KEY, default_params={"smart_format": True})  # type: ignore[arg-type]
    return DeepgramProvider(config, CLIENT, session, keepalive_seconds=keepalive)


# ---- OpenAI -------------------------------------------------------------------------


async def test_openai_posts_the_segment_as_wav_and_reads_the_json_text(
    openai_fake: FakeStt, session: aiohttp.ClientSession
) -> None:
    pcm = pcm_of(800)
    request = SttRequest(finished_segment(pcm), 200, "en-US", interim_results=False)
    events = await collect(openai(openai_fake, session).transcribe(request))
    assert events == [SttFinal(describe_pcm(pcm[200 * 32 :]))]
    fields = openai_fake.stats.last_fields
    assert fields["model"] == "gpt-4o-mini-transcribe"
    assert fields["language"] == "en" and fields["response_format"] == "json"
    assert "stream" not in fields
    assert openai_fake.stats.last_headers["Authorization"] == "Bearer sk-test-1234"


async def test_openai_streams_deltas_as_interims_when_asked(
    openai_fake: FakeStt, session: aiohttp.ClientSession
) -> None:
    openai_fake.script.text = "the quick brown fox"
    request = SttRequest(finished_segment(pcm_of(300)), interim_results=True)
    events = await collect(openai(openai_fake, session).transcribe(request))
    assert events == [
        SttInterim("the"),
        SttInterim("the quick"),
        SttInterim("the quick brown"),
        SttInterim("the quick brown fox"),
        SttFinal("the quick brown fox"),
    ]
    assert openai_fake.stats.last_fields["stream"] == "true"


@pytest.mark.parametrize(
    ("fault", "category", "retryable"),
    [
        ("http_500", ErrorCategory.TRANSIENT, True),
        ("http_429", ErrorCategory.RATE_LIMITED, True),
        ("http_401", ErrorCategory.AUTH, True),
        ("http_400", ErrorCategory.BAD_REQUEST, False),
        ("malformed", ErrorCategory.PROTOCOL, True),
        ("empty", ErrorCategory.EMPTY_OUTPUT, True),
        ("refuse", ErrorCategory.TRANSIENT, True),
        ("drop", ErrorCategory.PROTOCOL, True),
    ],
)
async def test_openai_faults_become_classified_errors(
    openai_fake: FakeStt,
    session: aiohttp.ClientSession,
    fault: str,
    category: ErrorCategory,
    retryable: bool,
) -> None:
    openai_fake.script.fault = fault  # type: ignore[assignment]
    request = SttRequest(finished_segment(pcm_of(300)))
    with pytest.raises(ProviderError) as caught:
        await collect(openai(openai_fake, session).transcribe(request))
    assert caught.value.category is category
    assert caught.value.retryable is retryable
    assert "sk-test-1234" not in str(caught.value)
    if fault == "http_429":
        assert caught.value.retry_after == 1.0


async def test_openai_stream_cut_before_done_is_a_protocol_error(
    openai_fake: FakeStt, session: aiohttp.ClientSession
) -> None:
    openai_fake.script.fault = "drop"
    openai_fake.script.text = "one two three four"
    request = SttRequest(finished_segment(pcm_of(300)), interim_results=True)
    seen: list[SttEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in openai(openai_fake, session).transcribe(request):
            seen.append(event)
    assert seen and all(isinstance(e, SttInterim) for e in seen)
    assert caught.value.category in (ErrorCategory.PROTOCOL, ErrorCategory.TRANSIENT)


async def test_openai_waits_for_the_segment_end_and_stops_when_abandoned(
    openai_fake: FakeStt, session: aiohttp.ClientSession
) -> None:
    openai_fake.script.fault = "stall"
    segment = SegmentAudio(0, 0, 0, 16000)
    segment.append(pcm_of(100))
    task = asyncio.create_task(
        collect(openai(openai_fake, session).transcribe(SttRequest(segment)))
    )
    await asyncio.sleep(0.05)
    assert openai_fake.stats.requests == 0  # nothing is posted before the segment ends
    segment.finish(100, 100)
    await openai_fake.stats.wait_until(lambda: openai_fake.stats.open == 1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await openai_fake.stats.wait_until(lambda: openai_fake.stats.closed_by_client == 1)


# ---- Deepgram -----------------------------------------------------------------------


async def test_deepgram_streams_live_and_commits_each_final_result(
    deepgram_fake: FakeStt, session: aiohttp.ClientSession
) -> None:
    pcm = pcm_of(1300)
    segment = SegmentAudio(0, 0, 0, 16000)
    request = SttRequest(segment, language="en-US", interim_results=True)
    events: list[SttEvent] = []

    async def consume() -> None:
        async for event in deepgram(deepgram_fake, session).transcribe(request):
            events.append(event)

    task = asyncio.create_task(consume())
    for i in range(0, len(pcm), 6400):  # 200 ms pieces, as speech arrives
        segment.append(pcm[i : i + 6400])
        await asyncio.sleep(0.01)
    await deepgram_fake.stats.wait_until(lambda: any(isinstance(e, SttCommitted) for e in events))
    assert not segment.finished  # a final result arrived while the segment was still open
    segment.finish(1300, 1300)
    await asyncio.wait_for(task, 5)
    committed = [e for e in events if isinstance(e, SttCommitted)]
    assert [c.through_ms for c in committed] == [500, 1000, 1300]
    assert any(isinstance(e, SttInterim) for e in events)
    final = events[-1]
    assert isinstance(final, SttFinal)
    assert pcm_totals(final.text) == pcm_totals(describe_pcm(pcm))
    query = deepgram_fake.stats.last_query
    assert query["encoding"] == "linear16" and query["sample_rate"] == "16000"
    assert query["interim_results"] == "true" and query["language"] == "en-US"
    assert query["smart_format"] == "true" and query["model"] == "nova-3"
    assert deepgram_fake.stats.last_headers["Authorization"] == f"Token {KEY}"
    await deepgram_fake.stats.wait_until(lambda: deepgram_fake.stats.completed == 1)
    assert deepgram_fake.stats.finalizes == 1


async def test_deepgram_sends_keepalives_while_no_audio_flows(
    deepgram_fake: FakeStt, session: aiohttp.ClientSession
) -> None:
    segment = SegmentAudio(0, 0, 0, 16000)
    segment.append(pcm_of(100))
    provider = deepgram(deepgram_fake, session, keepalive=0.03)
    task = asyncio.create_task(collect(provider.transcribe(SttRequest(segment))))
    await deepgram_fake.stats.wait_until(lambda: deepgram_fake.stats.keepalives >= 2)
    segment.finish(100, 100)
    events = await asyncio.wait_for(task, 5)
    assert isinstance(events[-1], SttFinal)


@pytest.mark.parametrize(
    ("fault", "category", "status"),
    [
        ("http_401", ErrorCategory.AUTH, 401),
        ("http_429", ErrorCategory.RATE_LIMITED, 429),
        ("http_500", ErrorCategory.TRANSIENT, 500),
        ("refuse", ErrorCategory.TRANSIENT, None),
        ("malformed", ErrorCategory.PROTOCOL, None),
        ("empty", ErrorCategory.TRANSIENT, None),
    ],
)
async def test_deepgram_faults_become_classified_errors(
    deepgram_fake: FakeStt,
    session: aiohttp.ClientSession,
    fault: str,
    category: ErrorCategory,
    status: int | None,
) -> None:
    deepgram_fake.script.fault = fault  # type: ignore[assignment]
    request = SttRequest(finished_segment(pcm_of(300)))
    with pytest.raises(ProviderError) as caught:
        await asyncio.wait_for(collect(deepgram(deepgram_fake, session).transcribe(request)), 5)
    assert caught.value.category is category
    assert caught.value.status == status
    assert KEY not in str(caught.value)
    if fault == "http_429":
        assert caught.value.retry_after == 1.0


async def test_deepgram_dropped_socket_fails_after_what_it_committed(
    deepgram_fake: FakeStt, session: aiohttp.ClientSession
) -> None:
    deepgram_fake.script.fault = "drop"
    pcm = pcm_of(1200)
    seen: list[SttEvent] = []
    with pytest.raises(ProviderError, match="closed mid-stream") as caught:
        async for event in deepgram(deepgram_fake, session).transcribe(
            SttRequest(finished_segment(pcm))
        ):
            seen.append(event)
    assert caught.value.retryable
    assert seen == [SttCommitted(describe_pcm(pcm[: 500 * 32]), 500)]


async def test_deepgram_stall_keeps_the_socket_until_abandoned(
    deepgram_fake: FakeStt, session: aiohttp.ClientSession
) -> None:
    deepgram_fake.script.fault = "stall"
    task = asyncio.create_task(
        collect(
            deepgram(deepgram_fake, session).transcribe(SttRequest(finished_segment(pcm_of(200))))
        )
    )
    await deepgram_fake.stats.wait_until(lambda: deepgram_fake.stats.open == 1)
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await deepgram_fake.stats.wait_until(lambda: deepgram_fake.stats.closed_by_client == 1)


# ---- the local engine ----------------------------------------------------------------

SENTENCES = ["turn on the kitchen lights", "what is the weather tomorrow"]


@pytest.fixture(scope="module")
def local_config(tmp_path_factory: pytest.TempPathFactory) -> PocketsphinxConfig:
    directory: Path = tmp_path_factory.mktemp("lm")
    return PocketsphinxConfig(
        lm_path=build_lm(SENTENCES, directory), dict_path=build_dict(SENTENCES, directory)
    )


async def test_pocketsphinx_recognises_espeak_speech_and_reuses_its_decoder(
    local_config: PocketsphinxConfig,
) -> None:
    spoken = synthesize(SENTENCES)
    provider = PocketsphinxProvider(local_config)
    try:
        for text in SENTENCES:
            pcm = np.concatenate([silence(300), speech_16k(spoken[text]), silence(300)])
            events = await collect(provider.transcribe(SttRequest(finished_segment(pcm.tobytes()))))
            assert events == [SttFinal(text)]
        assert provider.decoders_created == 1
        assert provider.describe()["engine"] == "pocketsphinx"
        with pytest.raises(ProviderError) as caught:
            await collect(
                provider.transcribe(SttRequest(finished_segment(b"\x00\x00"), language="de"))
            )
        assert caught.value.category is ErrorCategory.BAD_REQUEST and caught.value.retryable
    finally:
        await provider.aclose()


async def test_pocketsphinx_never_decodes_before_the_segment_ends(
    local_config: PocketsphinxConfig,
) -> None:
    provider = PocketsphinxProvider(local_config)
    try:
        segment = SegmentAudio(0, 0, 0, 16000)
        segment.append(bytes(3200))
        task = asyncio.create_task(collect(provider.transcribe(SttRequest(segment))))
        await asyncio.sleep(0.02)
        assert not task.done() and provider.decoders_created == 0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert provider.decoders_created == 0
    finally:
        await provider.aclose()


async def test_pocketsphinx_sends_partial_decodes_as_interims_while_the_segment_grows(
    local_config: PocketsphinxConfig,
) -> None:
    spoken = speech_16k(synthesize([SENTENCES[0]])[SENTENCES[0]])
    pcm = np.concatenate([silence(300), spoken, silence(300)]).tobytes()
    provider = PocketsphinxProvider(local_config)
    try:
        segment = SegmentAudio(0, 0, 0, 16000)
        events = provider.transcribe(SttRequest(segment, interim_results=True))
        first = 32 * 1200  # 1.2 s: more than one interim_interval of audio
        segment.append(pcm[:first])
        interim = await asyncio.wait_for(anext(events), 20)
        assert isinstance(interim, SttInterim), interim
        words = interim.text.split()
        assert words and set(words) <= set(SENTENCES[0].split()), interim.text
        segment.append(pcm[first:])
        segment.finish(len(pcm) // 32, len(pcm) // 32)
        rest = [event async for event in events]
        assert rest == [SttFinal(SENTENCES[0])]  # no interim once the segment has ended
        assert provider.decoders_created == 1
    finally:
        await provider.aclose()


async def test_pocketsphinx_sends_no_interims_unless_asked(
    local_config: PocketsphinxConfig,
) -> None:
    spoken = speech_16k(synthesize([SENTENCES[1]])[SENTENCES[1]])
    pcm = np.concatenate([silence(300), spoken, silence(300)]).tobytes()
    provider = PocketsphinxProvider(local_config)
    try:
        segment = SegmentAudio(0, 0, 0, 16000)
        task = asyncio.create_task(collect(provider.transcribe(SttRequest(segment))))
        for i in range(0, len(pcm), 640):
            segment.append(pcm[i : i + 640])
            await asyncio.sleep(0)
        segment.finish(len(pcm) // 32, len(pcm) // 32)
        assert await asyncio.wait_for(task, 20) == [SttFinal(SENTENCES[1])]
    finally:
        await provider.aclose()
