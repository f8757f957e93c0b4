"""speak end to end: a real websocket client against Sluice, the local engine and fakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType

from fakes.tts_servers import (
    FakeSpeechServer,
    expected_bytes,
    run_fake_elevenlabs,
    run_fake_openai_speech,
)
from server import GATEWAY
from tests.conftest import MakeClient
from tests.speak_helpers import (
    FAST_CLIENT,
    decode,
    local_model,
    read_speak,
    rms,
    speak,
    speak_config,
    split_binary,
    text_msg,
)

URL = "/v1/speech/s/speak"
TEXT = "Hello there. This is Sluice speaking! Dr. Smith paid 3.50 dollars, e.g. a lot."


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeSpeechServer]:
    """A fake OpenAI speech upstream."""
    async with run_fake_openai_speech() as fake:
        yield fake


@pytest.fixture
async def fake_eleven() -> AsyncIterator[FakeSpeechServer]:
    """A fake ElevenLabs upstream."""
    async with run_fake_elevenlabs() as fake:
        yield fake


def openai_model(model_id: str, fake: FakeSpeechServer, **extra: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "client": FAST_CLIENT,
        "openai": {"base_url": fake.url, "model": "tts-fake", "api_key": "sk-test-SECRET-1234"},
        **extra,
    }


def eleven_model(
    model_id: str, fake: FakeSpeechServer, transport: str = "websocket", **extra: Any
) -> dict[str, Any]:
    return {
        "id": model_id,
        "client": FAST_CLIENT,
        "elevenlabs": {
            "base_url": fake.url,
            "ws_url": fake.ws_url,
            "transport": transport,
            "voice_id": "voice-1",
            "api_key": "xi-SECRET-5678",
        },
        **extra,
    }


# ---- the local engine --------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "rate", "channels"),
    [
        ("pcm_s16le", 16000, 1),
        ("wav", 24000, 1),
        ("wav", 22050, 2),
        ("flac", 24000, 1),
        ("ogg_opus", 48000, 1),
        ("mp3", 22050, 1),
    ],
)
async def test_local_engine_speaks_every_format(
    sluice: MakeClient, encoding: str, rate: int, channels: int
) -> None:
    client = await sluice(speak_config(local_model()))
    fmt = {"encoding": encoding, "sample_rate": rate, "channels": channels}
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("r1", TEXT, format=fmt, final=True, metadata={"n": 1}))
        results = await read_speak(ws, 1)
    result = results["r1"]
    done = result.terminal
    assert done["type"] == "done" and done["finish_reason"] == "complete", done
    assert done["metadata"] == {"n": 1} and done["router_id"] == "s"
    segments = result.segments
    assert [s["segment_id"] for s in segments] == [0, 1, 2]
    assert [s["text"] for s in segments] == [
        "Hello there.",
        "This is Sluice speaking!",
        "Dr. Smith paid 3.50 dollars, e.g. a lot.",
    ]
    assert all(s["provider_id"] == "local" and s["model_id"] == "local" for s in segments)
    assert [TEXT[s["start_char"] : s["end_char"]] for s in segments] == [
        s["text"] for s in segments
    ]
    assert done["usage"]["characters"] == len(TEXT)
    assert abs(done["usage"]["audio_ms"] - sum(s["audio_ms"] for s in segments)) <= 2
    assert done["usage"]["audio_ms"] > 1000
    assert done["time_to_first_audio_ms"] >= 0
    assert len(result.received) >= sum(s["audio_bytes"] for s in segments)  # + encoder tail
    data = bytes(result.received)
    if encoding == "pcm_s16le":
        import numpy as np

        samples = np.frombuffer(data, dtype="<i2")
        got_rate, got_channels = rate, 1
        assert len(data) == sum(s["audio_bytes"] for s in segments)
    else:
        samples, got_rate, got_channels = decode(data)
    assert (got_rate, got_channels) == (rate, channels)
    seconds = samples.size / channels / rate
    assert seconds > 1.0
    assert abs(seconds - done["usage"]["audio_ms"] / 1000) < 0.25, (seconds, done["usage"])
    assert rms(samples) > 300  # speech, not silence


async def test_streamed_text_starts_audio_before_final(sluice: MakeClient) -> None:
    client = await sluice(speak_config(local_model()))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("s1", format={"encoding": "pcm_s16le", "sample_rate": 16000}))
        for token in ["The first ", "sentence is ", "complete. ", "The sec"]:
            await ws.send_str(text_msg("s1", token))
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is WSMsgType.BINARY  # audio before the text is complete
        assert split_binary(msg.data)[0] == "s1"
        await ws.send_str(text_msg("s1", "ond one ends here.", final=True))
        results = await read_speak(ws, 1)
    result = results["s1"]
    assert result.terminal["type"] == "done"
    assert [s["text"] for s in result.segments] == [
        "The first sentence is complete.",
        "The second one ends here.",
    ]


async def test_cancel_stops_local_synthesis(sluice: MakeClient) -> None:
    client = await sluice(speak_config(local_model()))
    long_text = " ".join(f"This is sentence number {i} of a long text." for i in range(200))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("c1", long_text, final=True))
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is WSMsgType.BINARY
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "c1"}))
        results = await read_speak(ws, 1)
        assert results["c1"].terminal["error"]["name"] == "cancelled"
        endpoint: Any = client.app[GATEWAY].speech["s"]["speak"]
        provider = endpoint.router.providers["local"]
        await asyncio.sleep(0.05)
        started = provider.stats.jobs_started
        await asyncio.sleep(0.1)
        assert provider.stats.jobs_started == started  # nothing more is synthesized
        assert started < 200 / 2  # audio runs at most ~10 s ahead: far from all 200
        # the socket lives on
        await ws.send_str(speak("c2", "Still here.", final=True))
        results = await read_speak(ws, 1)
        assert results["c2"].terminal["type"] == "done"


async def test_fifty_concurrent_requests_on_one_socket(sluice: MakeClient) -> None:
    client = await sluice(speak_config(local_model()))
    fmt = {"encoding": "pcm_s16le", "sample_rate": 16000}
    async with client.ws_connect(URL) as ws:
        for i in range(50):
            await ws.send_str(speak(f"q{i}", f"Request number {i}. Done.", format=fmt, final=True))
        results = await read_speak(ws, 50, within=30)
    assert set(results) == {f"q{i}" for i in range(50)}
    for i in range(50):
        result = results[f"q{i}"]
        assert result.terminal["type"] == "done", result.terminal
        assert [s["segment_id"] for s in result.segments] == [0, 1]
        assert len(result.received) == sum(s["audio_bytes"] for s in result.segments) > 0


async def test_validation_errors_are_typed_and_the_socket_lives(sluice: MakeClient) -> None:
    client = await sluice(speak_config(local_model(), max_text_chars=100))
    async with client.ws_connect(URL) as ws:
        bad = [
            speak("b1", "Hi.", format={"encoding": "aiff"}, final=True),
            speak("b2", "Hi.", format={"encoding": "ogg_opus", "sample_rate": 22050}, final=True),
            speak("b3", final=True),
            speak("b4", "x" * 101, final=True),
            text_msg("b5", "orphan text"),
            speak("b6", "Hi.", format={"encoding": "mp3", "sample_rate": 9000}, final=True),
        ]
        for message in bad:
            await ws.send_str(message)
        results = await read_speak(ws, len(bad))
        names = {rid: r.terminal["error"]["name"] for rid, r in results.items()}
        assert names == {
            "b1": "unsupported_format",
            "b2": "unsupported_format",
            "b3": "invalid_request",
            "b4": "text_too_long",
            "b5": "request_not_found",
            "b6": "unsupported_format",
        }
        assert all(r.terminal["error"]["finish_reason"] == "error" for r in results.values())
        # streamed text past the limit ends that request; text after final is a notice
        await ws.send_str(speak("b7", "A start."))
        await ws.send_str(text_msg("b7", "y" * 100))
        await ws.send_str(speak("b8", "Fine.", final=True))
        await ws.send_str(text_msg("b8", "late"))
        results = await read_speak(ws, 2)
        assert results["b7"].terminal["error"]["name"] == "text_too_long"
        assert results["b8"].terminal["type"] == "done"
        late = results["b8"].errors("invalid_request")
        assert late == [] or "finish_reason" not in late[0]
        await ws.send_str(speak("ok", "Still alive.", final=True))
        results = await read_speak(ws, 1)
        assert results["ok"].terminal["type"] == "done"


async def test_describe_lists_speak_models(sluice: MakeClient) -> None:
    client = await sluice(speak_config(local_model()))
    resp = await client.get("/v1/speech/")
    body = await resp.json()
    router = body["routers"][0]
    assert router["id"] == "s"
    assert router["speak"]["models"][0]["provider"] == "local"
    assert router["speak"]["models"][0]["health"] == "healthy"


# ---- fakes: failover and faults ------------------------------------------------------


FOUR = "First sentence here. Second one follows. Third is longer than the rest. Fourth ends."
PCM24 = {"encoding": "pcm_s16le", "sample_rate": 24000}


def _expected(result_segments: list[dict[str, Any]]) -> int:
    return sum(expected_bytes(s["text"], 24000) for s in result_segments)


@pytest.mark.parametrize("transport", ["websocket", "http"])
async def test_mid_sentence_failure_resynthesizes_that_sentence_once(
    sluice: MakeClient,
    fake_openai: FakeSpeechServer,
    fake_eleven: FakeSpeechServer,
    transport: str,
) -> None:
    fake_openai.script.faults = ["none", "fail_mid_stream"]
    config = speak_config(
        openai_model("oa", fake_openai), eleven_model("el", fake_eleven, transport)
    )
    client = await sluice(config)
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("m1", FOUR, format=PCM24, final=True))
        results = await read_speak(ws, 1)
    result = results["m1"]
    assert result.terminal["type"] == "done", result.terminal
    segments = result.segments
    assert [s["segment_id"] for s in segments] == [0, 1, 2, 3]
    assert [s["model_id"] for s in segments] == ["oa", "el", "el", "el"]
    assert [s["provider_id"] for s in segments] == [
        "openai",
        "elevenlabs",
        "elevenlabs",
        "elevenlabs",
    ]
    [notice] = result.errors("model_unavailable")
    assert notice["segment_id"] == 1 and notice["model_id"] == "oa"
    assert "finish_reason" not in notice
    assert notice["drop_bytes"] > 0  # partial audio of segment 1 was sent, then dropped
    for segment in segments:
        assert segment["audio_bytes"] == expected_bytes(segment["text"], 24000)
    assert len(result.kept) == _expected(segments)
    assert len(result.received) == _expected(segments) + notice["drop_bytes"]
    assert fake_eleven.stats.texts == [s["text"] for s in segments[1:]]


@pytest.mark.parametrize(
    "fault",
    [
        "refuse",
        "http_500",
        "http_429",
        "http_401",
        "stall_before_first",
        "stall_mid_stream",
        "truncated",
        "malformed",
        "empty",
        "half_sample",
    ],
)
async def test_openai_faults_fail_over_to_elevenlabs(
    sluice: MakeClient, fake_openai: FakeSpeechServer, fake_eleven: FakeSpeechServer, fault: str
) -> None:
    fake_openai.script.fault = fault  # type: ignore[assignment]
    quick = {"client": {**FAST_CLIENT, "first_chunk_timeout": "400ms", "idle_timeout": "400ms"}}
    config = speak_config(openai_model("oa", fake_openai, **quick), eleven_model("el", fake_eleven))
    client = await sluice(config)
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("f1", "One. Two.", format=PCM24, final=True))
        results = await read_speak(ws, 1)
    result = results["f1"]
    assert result.terminal["type"] == "done", result.terminal
    assert [s["model_id"] for s in result.segments] == ["el", "el"]
    assert len(result.kept) == _expected(result.segments)
    if fault in ("stall_before_first", "stall_mid_stream"):
        await fake_openai.stats.wait_stream_closed()


@pytest.mark.parametrize(
    "fault",
    ["http_401", "http_429", "stall_before_first", "error_event", "malformed", "drop", "empty"],
)
async def test_elevenlabs_websocket_faults_fail_over_to_openai(
    sluice: MakeClient, fake_openai: FakeSpeechServer, fake_eleven: FakeSpeechServer, fault: str
) -> None:
    fake_eleven.script.fault = fault  # type: ignore[assignment]
    quick = {"client": {**FAST_CLIENT, "first_chunk_timeout": "400ms", "idle_timeout": "400ms"}}
    config = speak_config(eleven_model("el", fake_eleven, **quick), openai_model("oa", fake_openai))
    client = await sluice(config)
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("e1", "One. Two.", format=PCM24, final=True))
        results = await read_speak(ws, 1)
    result = results["e1"]
    assert result.terminal["type"] == "done", result.terminal
    assert [s["model_id"] for s in result.segments] == ["oa", "oa"]


async def test_all_models_failing_ends_with_all_models_unavailable(
    sluice: MakeClient, fake_openai: FakeSpeechServer, fake_eleven: FakeSpeechServer
) -> None:
    fake_openai.script.fault = "http_500"
    fake_eleven.script.fault = "empty"
    config = speak_config(openai_model("oa", fake_openai), eleven_model("el", fake_eleven))
    client = await sluice(config)
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("a1", "Nobody can say this.", format=PCM24, final=True))
        results = await read_speak(ws, 1)
    error = results["a1"].terminal["error"]
    assert error["name"] == "all_models_unavailable"
    assert "SECRET" not in json.dumps(results["a1"].frames)


@pytest.mark.parametrize("which", ["openai", "elevenlabs-ws", "elevenlabs-http"])
async def test_cancel_closes_the_upstream_stream(
    sluice: MakeClient, fake_openai: FakeSpeechServer, fake_eleven: FakeSpeechServer, which: str
) -> None:
    fake = fake_openai if which == "openai" else fake_eleven
    fake.script.delay = 0.05
    fake.script.ms_per_char = 200  # long audio, slowly
    if which == "openai":
        model = openai_model("m", fake_openai)
    else:
        model = eleven_model("m", fake_eleven, "http" if which.endswith("http") else "websocket")
    client = await sluice(speak_config(model))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("x1", "A long sentence to cancel.", format=PCM24, final=True))
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is WSMsgType.BINARY
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "x1"}))
        results = await read_speak(ws, 1)
        assert results["x1"].terminal["error"]["name"] == "cancelled"
        await fake.stats.wait_stream_closed(within=2.0)
        await fake.stats.wait_idle()


async def test_streamed_text_with_upstream_providers(
    sluice: MakeClient, fake_eleven: FakeSpeechServer
) -> None:
    client = await sluice(speak_config(eleven_model("el", fake_eleven)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("t1", "Hello", format=PCM24, voice={"elevenlabs": "v-99"}))
        await ws.send_str(text_msg("t1", " world. And"))
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is WSMsgType.BINARY
        first_audio = split_binary(msg.data)[1]
        await ws.send_str(text_msg("t1", " goodbye.", final=True))
        results = await read_speak(ws, 1)
    result = results["t1"]
    assert [s["text"] for s in result.segments] == ["Hello world.", "And goodbye."]
    assert len(first_audio) + len(result.kept) == _expected(result.segments)
    assert fake_eleven.stats.last_path == "/v1/text-to-speech/v-99/stream-input"
    assert fake_eleven.stats.last_headers["xi-api-key"] == "xi-SECRET-5678"
    assert fake_eleven.stats.last_query["output_format"] == "pcm_24000"


async def test_a_client_disconnect_stops_upstream_synthesis(
    sluice: MakeClient, fake_openai: FakeSpeechServer
) -> None:
    fake_openai.script.delay = 0.05
    fake_openai.script.ms_per_char = 200
    client = await sluice(speak_config(openai_model("oa", fake_openai)))
    ws = await client.ws_connect(URL)
    for i in range(3):
        await ws.send_str(
            speak(f"d{i}", "A long sentence, spoken slowly.", format=PCM24, final=True)
        )
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is WSMsgType.BINARY
    await ws.close()
    await fake_openai.stats.wait_stream_closed(within=2.0, count=3)
    await fake_openai.stats.wait_idle()


async def test_a_cancel_right_behind_speak_is_not_lost(sluice: MakeClient) -> None:
    client = await sluice(speak_config(local_model()))
    long_text = " ".join(f"Sentence {i} of many." for i in range(100))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(speak("k1", long_text, final=True))
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "k1"}))
        results = await read_speak(ws, 1)
    assert results["k1"].terminal["error"]["name"] == "cancelled"
    assert results["k1"].segments == []


async def test_text_sent_in_one_burst_behind_speak_is_all_spoken(sluice: MakeClient) -> None:
    client = await sluice(speak_config(local_model()))
    async with client.ws_connect(URL) as ws:
        burst = [speak("b1", "One ", format={"encoding": "pcm_s16le", "sample_rate": 16000})]
        burst += [text_msg("b1", "two. "), text_msg("b1", "Three"), text_msg("b1", ".", final=True)]
        await asyncio.gather(*(ws.send_str(m) for m in burst))
        results = await read_speak(ws, 1)
    result = results["b1"]
    assert result.terminal["type"] == "done"
    assert result.terminal["usage"]["characters"] == len("One two. Three.")
    assert [s["text"] for s in result.segments] == ["One two.", "Three."]
