"""The listen endpoint end to end: a real websocket client against the real server.

Speech is made here with espeak-ng; the embedded engine decodes it with an
in-domain language model. Fake OpenAI / Deepgram servers inject faults.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import reactivex
import soundfile as sf
from aiohttp.test_utils import TestClient

from audio.pcm import wav_bytes
from audio.resample import resample
from config.models import SluiceConfig
from fakes.stt_servers import (
    FakeStt,
    describe_pcm,
    pcm_totals,
    run_fake_deepgram,
    run_fake_transcription,
)
from operators.vad import Segment, VadSettings, vad_segments, whole_segments
from protocol.messages import encode_binary
from server import build_app
from tests.listen_client import (
    FAST_CLIENT,
    check_event_order,
    collect,
    finals,
    interleave_stereo,
    listen_config,
    local_model,
    receive,
    send_audio,
    start,
)
from tests.speech_audio import silence, speech_16k, synthesize

SENTENCES = [
    "turn on the kitchen lights",
    "what is the weather tomorrow",
    "open the garage door",
    "read me the news",
    "stop the music",
    "call my sister on the phone",
    "how far is the airport",
]
RATE = 16000
FRAME_MS = 20


@pytest.fixture(scope="module")
def spoken() -> dict[str, np.ndarray]:
    return {text: speech_16k(audio) for text, audio in synthesize(SENTENCES).items()}


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("listen_lm")


def utterances(
    spoken: dict[str, np.ndarray], texts: list[str], lead: int = 500, gap: int = 800
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Speech separated by silence, and where each sentence's sound really is (ms)."""
    parts, truth, pos = [silence(lead)], [], float(lead)
    for text in texts:
        samples = spoken[text]
        loud = np.nonzero(np.abs(samples) > 200)[0]
        truth.append((pos + loud[0] / 16, pos + (loud[-1] + 1) / 16))
        parts += [samples, silence(gap)]
        pos += samples.size / 16 + gap
    return np.concatenate(parts), truth


def expected_segments(pcm: bytes, settings: VadSettings | None = None) -> list[Segment]:
    segments: list[Segment] = []
    reactivex.of(pcm).pipe(
        vad_segments(settings or VadSettings(), RATE), whole_segments(RATE)
    ).subscribe(segments.append)
    return segments


Client = TestClient[Any, Any]


@pytest.fixture
def sluice(aiohttp_client: Any) -> Any:
    async def make(config: SluiceConfig) -> Client:
        client: Client = await aiohttp_client(build_app(config))
        return client

    return make


# ---- the embedded engine ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "channels", "chunk"),
    [(16000, 1, 640), (48000, 2, 3841), (24000, 1, 321)],
    ids=["16k-mono-20ms", "48k-stereo-odd-chunks", "24k-mono-odd-chunks"],
)
async def test_local_engine_transcribes_streamed_speech_with_exact_segments(
    sluice: Any, spoken: dict[str, np.ndarray], lm_dir: Path, rate: int, channels: int, chunk: int
) -> None:
    texts = SENTENCES[:3]
    mono, truth = utterances(spoken, texts)
    client = await sluice(listen_config([local_model(lm_dir, SENTENCES)]))
    signal = resample(mono, RATE, rate)
    if channels == 2:
        signal = interleave_stereo(signal)
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        await start(ws, "r1", rate=rate, channels=channels, metadata={"user": "u1"})
        await send_audio(ws, "r1", signal.tobytes(), chunk=chunk)
        await ws.send_str(json.dumps({"type": "end", "request_id": "r1"}))
        frames = (await collect(ws, ["r1"]))["r1"]

    check_event_order(frames)
    assert all(f["metadata"] == {"user": "u1"} and f["router_id"] == "speech" for f in frames)
    assert [f["text"] for f in finals(frames)] == texts
    started = [f for f in frames if f["type"] == "speech_started"]
    ended = [f for f in frames if f["type"] == "speech_ended"]
    # Frame quantisation (one frame) plus a frame straddling the edge (one more);
    # the end also carries webrtcvad's own built-in smoothing (~60-120 ms).
    tolerance = 2 * FRAME_MS
    for begin, stop in zip(started, ended, strict=True):
        true_begin, true_end = truth[begin["segment_id"]]
        assert abs(begin["start_ms"] - true_begin) <= tolerance
        assert true_end - tolerance <= stop["end_ms"] <= true_end + tolerance + 120
    for final in finals(frames):
        assert final["provider_id"] == "local" and final["model_id"] == "local"
        assert (final["start_ms"], final["end_ms"]) == (
            started[final["segment_id"]]["start_ms"],
            ended[final["segment_id"]]["end_ms"],
        )
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "complete"
    assert done["usage"] == {"audio_ms": mono.size * 1000 // RATE, "segments": 3}
    exposition = await (await client.get("/metrics")).text()
    counts = [
        line
        for line in exposition.splitlines()
        if line.startswith("sluice_time_to_final_transcript_seconds_count") and "listen" in line
    ]
    assert len(counts) == 1 and counts[0].endswith(" 3.0"), counts


async def test_odd_bytes_are_carried_over_and_a_dangling_byte_is_reported(
    sluice: Any, spoken: dict[str, np.ndarray], lm_dir: Path
) -> None:
    mono, _ = utterances(spoken, ["stop the music"], gap=400)
    data = mono.tobytes() + b"\x07"  # one byte too many at the very end
    client = await sluice(listen_config([local_model(lm_dir, SENTENCES)]))
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        await start(ws, "odd")
        await send_audio(ws, "odd", data, chunk=641)
        await ws.send_str(json.dumps({"type": "end", "request_id": "odd"}))
        frames = (await collect(ws, ["odd"]))["odd"]
    assert [f["text"] for f in finals(frames)] == ["stop the music"]
    notices = [f for f in frames if f["type"] == "error"]
    assert [n["error"]["name"] for n in notices] == ["invalid_audio"]
    assert "finish_reason" not in notices[0]["error"]
    assert frames[-1]["type"] == "done"


async def test_bad_messages_get_typed_errors_and_the_socket_lives(
    sluice: Any, spoken: dict[str, np.ndarray], lm_dir: Path
) -> None:
    client = await sluice(listen_config([local_model(lm_dir, SENTENCES)]))
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        await ws.send_bytes(encode_binary("ghost", b"\x00\x01" * 10))
        await start(ws, "bad-rate", rate=12345)
        await ws.send_str(json.dumps({"type": "listen", "request_id": "no-format"}))
        await start(ws, "bad-vad", vad={"hangover": "5ms"})
        await ws.send_str(
            json.dumps({"type": "listen", "request_id": "wav", "format": {"encoding": "wav"}})
        )
        await ws.send_bytes(encode_binary("wav", b"this is not a RIFF header"))
        await start(ws, "switch")
        await start(ws, "switch", rate=48000)
        await start(ws, "again")
        await start(ws, "again")
        await ws.send_str(json.dumps({"type": "speak", "request_id": "again"}))
        frames = await collect(ws, ["bad-rate", "no-format", "bad-vad", "wav", "switch"])
        assert frames["ghost"][0]["error"]["name"] == "unknown_request"
        assert "finish_reason" not in frames["ghost"][0]["error"]
        assert frames["bad-rate"][-1]["error"]["name"] == "unsupported_format"
        assert frames["no-format"][-1]["error"]["name"] == "payload_parse_error"
        assert frames["bad-vad"][-1]["error"]["name"] == "invalid_request"
        assert frames["wav"][-1]["error"]["name"] == "invalid_audio"
        assert frames["switch"][-1]["error"]["name"] == "format_changed"
        # the socket and the still-active request both live on
        mono, _ = utterances(spoken, ["read me the news"], gap=400)
        await send_audio(ws, "again", mono.tobytes(), chunk=3200)
        await ws.send_str(json.dumps({"type": "end", "request_id": "again"}))
        await ws.send_bytes(encode_binary("again", b"\x00\x00"))
        rest = frames.get("again", []) + (await collect(ws, ["again"]))["again"]
        assert [f["text"] for f in finals(rest)] == ["read me the news"]
        assert [f["error"]["name"] for f in rest if f["type"] == "error"] == [
            "duplicate_request_id",
            "unsupported_message_type",
            "audio_after_end",
        ]
        assert rest[-1]["type"] == "done"


async def test_audio_past_the_limit_is_cut_transcribed_up_to_it_and_reported(
    sluice: Any, spoken: dict[str, np.ndarray], lm_dir: Path
) -> None:
    mono, _ = utterances(spoken, ["stop the music"], lead=300, gap=2000)
    client = await sluice(listen_config([local_model(lm_dir, SENTENCES)], max_audio_seconds=2))
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        await start(ws, "long")
        await send_audio(ws, "long", mono.tobytes(), chunk=1000)
        frames = (await collect(ws, ["long"]))["long"]
    assert [f["text"] for f in finals(frames)] == ["stop the music"]
    last = frames[-1]["error"]
    assert last["name"] == "audio_too_long" and last["limit"] == "max_audio_seconds"
    assert last["finish_reason"] == "error"
    assert last["usage"] == {"audio_ms": 2000, "segments": 1}
    assert [f["error"]["name"] for f in frames if f["type"] == "error"][:-1] == ["audio_after_end"]


async def test_the_speech_listing_shows_listen_models_without_secrets(
    sluice: Any, lm_dir: Path
) -> None:
    openai = {
        "id": "cloud",
        "openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-listing-secret"},
    }
    client = await sluice(listen_config([local_model(lm_dir, SENTENCES), openai]))
    resp = await client.get("/v1/speech/")
    body = await resp.json()
    assert "sk-listing-secret" not in json.dumps(body)
    listen = body["routers"][0]["listen"]
    assert [m["id"] for m in listen["models"]] == ["local", "cloud"]
    assert listen["models"][0]["engine"] == "pocketsphinx"
    assert listen["models"][1]["health"] == "healthy"
    assert listen["vad"]["frame_ms"] == 20 and "pcm_s16le" in listen["encodings"]


# ---- failover with fake vendors -------------------------------------------------------


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeStt]]:
    async with (
        run_fake_transcription() as failing,
        run_fake_transcription() as healthy,
        run_fake_deepgram() as deepgram,
    ):
        yield {"failing": failing, "healthy": healthy, "deepgram": deepgram}


def openai_model(model_id: str, fake: FakeStt, **client: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "client": {**FAST_CLIENT, **client},
        "openai": {"base_url": fake.url, "api_key": "sk-test-1234"},
    }


def deepgram_model(model_id: str, fake: FakeStt) -> dict[str, Any]:
    return {
        "id": model_id,
        "client": FAST_CLIENT,
        "deepgram": {"ws_url": fake.ws_url, "api_key": "k"},
    }


FAULTS = [
    *(("openai", f) for f in ["http_500", "http_429", "http_401", "refuse", "drop"]),
    *(("openai", f) for f in ["malformed", "empty", "stall"]),
    *(("deepgram", f) for f in ["http_500", "http_401", "refuse", "malformed", "empty", "stall"]),
]


@pytest.mark.parametrize(("vendor", "fault"), FAULTS, ids=[f"{v}-{f}" for v, f in FAULTS])
async def test_a_failing_model_loses_no_segment_and_keeps_the_order(
    sluice: Any, spoken: dict[str, np.ndarray], fakes: dict[str, FakeStt], vendor: str, fault: str
) -> None:
    failing = fakes["failing" if vendor == "openai" else "deepgram"]
    failing.script.fault = fault  # type: ignore[assignment]
    failing.script.final_every_ms = 60_000  # Deepgram: no final result before the end
    mono, _ = utterances(spoken, SENTENCES[:4], gap=600)
    pcm = mono.tobytes()
    expected = expected_segments(pcm)
    first = (
        openai_model("failing", failing, first_chunk_timeout="300ms")
        if vendor == "openai"
        else {
            **deepgram_model("failing", failing),
            "client": {**FAST_CLIENT, "first_chunk_timeout": "300ms"},
        }
    )
    config = listen_config([first, openai_model("healthy", fakes["healthy"])])
    client = await sluice(config)
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        await start(ws, "f1")
        await send_audio(ws, "f1", pcm, chunk=640)
        await ws.send_str(json.dumps({"type": "end", "request_id": "f1"}))
        frames = (await collect(ws, ["f1"]))["f1"]
    check_event_order(frames)
    got = finals(frames)
    assert [f["text"] for f in got] == [describe_pcm(s.pcm) for s in expected]
    assert [(f["start_ms"], f["end_ms"]) for f in got] == [(s.start_ms, s.end_ms) for s in expected]
    assert {f["model_id"] for f in got} == {"healthy"}
    # every segment reached the healthy model whole; segments whose deadlines pass
    # together are re-sent concurrently, so the provider may see them in any order
    # (the client's order is asserted above)
    assert sorted(fakes["healthy"].stats.audio) == sorted(s.pcm for s in expected)
    assert frames[-1]["usage"]["segments"] == len(expected) == 4


async def test_a_dropped_deepgram_socket_replays_only_the_audio_after_its_last_final(
    sluice: Any, spoken: dict[str, np.ndarray], fakes: dict[str, FakeStt]
) -> None:
    fakes["deepgram"].script.fault = "drop"
    fakes["deepgram"].script.final_every_ms = 500
    mono, _ = utterances(spoken, SENTENCES[:2], gap=600)
    pcm = mono.tobytes()
    expected = expected_segments(pcm)
    config = listen_config(
        [deepgram_model("deepgram", fakes["deepgram"]), openai_model("healthy", fakes["healthy"])]
    )
    client = await sluice(config)
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        await start(ws, "d1", interim_results=True)
        await send_audio(ws, "d1", pcm, chunk=640)
        await ws.send_str(json.dumps({"type": "end", "request_id": "d1"}))
        frames = (await collect(ws, ["d1"]))["d1"]
    check_event_order(frames)
    got = finals(frames)
    assert len(got) == len(expected) == 2
    for final, segment in zip(got, expected, strict=True):
        # Deepgram committed the first 500 ms; the backup heard exactly the rest.
        assert pcm_totals(final["text"]) == pcm_totals(describe_pcm(segment.pcm))
        assert final["text"].startswith(describe_pcm(segment.pcm[: 500 * 32]))
        assert final["model_id"] == "healthy"
    assert fakes["healthy"].stats.audio == [s.pcm[500 * 32 :] for s in expected]
    resets = [f for f in frames if f["type"] == "error"]
    assert [r["error"]["name"] for r in resets] == ["model_unavailable"] * 2
    assert [r["error"]["segment_id"] for r in resets] == [0, 1]
    assert frames[-1]["type"] == "done"


async def test_deepgram_interim_results_reach_the_client_before_the_final(
    sluice: Any, spoken: dict[str, np.ndarray], fakes: dict[str, FakeStt]
) -> None:
    fakes["deepgram"].script.final_every_ms = 400
    mono, _ = utterances(spoken, ["call my sister on the phone"], gap=500)
    pcm = mono.tobytes()
    (segment,) = expected_segments(pcm)
    client = await sluice(listen_config([deepgram_model("deepgram", fakes["deepgram"])]))
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        await start(ws, "i1", interim_results=True, language="en-US")
        await send_audio(ws, "i1", pcm, chunk=640, pace=0.001)
        await ws.send_str(json.dumps({"type": "end", "request_id": "i1"}))
        frames = (await collect(ws, ["i1"]))["i1"]
    check_event_order(frames)
    transcripts = [f for f in frames if f["type"] == "transcript"]
    assert len(transcripts) > 2 and not any(t["is_final"] for t in transcripts[:-1])
    assert transcripts[-1]["is_final"] and transcripts[-1]["provider_id"] == "deepgram"
    assert pcm_totals(transcripts[-1]["text"]) == pcm_totals(describe_pcm(segment.pcm))
    assert fakes["deepgram"].stats.last_query["language"] == "en-US"


async def test_cancel_and_disconnect_stop_provider_work_at_once(
    sluice: Any, spoken: dict[str, np.ndarray], fakes: dict[str, FakeStt]
) -> None:
    fakes["failing"].script.fault = "stall"
    mono, _ = utterances(spoken, ["open the garage door"], gap=500)
    config = listen_config([openai_model("slow", fakes["failing"], first_chunk_timeout="30s")])
    client = await sluice(config)
    stats = fakes["failing"].stats
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        await start(ws, "c1")
        await send_audio(ws, "c1", mono.tobytes(), chunk=3200)
        await stats.wait_until(lambda: stats.open == 1, within=5)
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "c1"}))
        frames = (await collect(ws, ["c1"]))["c1"]
        assert frames[-1]["error"]["name"] == "cancelled"
        assert frames[-1]["error"]["finish_reason"] == "cancelled"
        await stats.wait_until(lambda: stats.closed_by_client == 1, within=2)

        await start(ws, "c2")
        await send_audio(ws, "c2", mono.tobytes(), chunk=3200)
        await stats.wait_until(lambda: stats.open == 1, within=5)
    await stats.wait_until(lambda: stats.closed_by_client == 2, within=2)
    await asyncio.sleep(0)


async def test_audio_and_a_cancel_right_behind_listen_are_not_lost(
    sluice: Any, spoken: dict[str, np.ndarray], lm_dir: Path
) -> None:
    mono, _ = utterances(spoken, ["stop the music"], gap=400)
    client = await sluice(listen_config([local_model(lm_dir, SENTENCES)]))
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        # everything in one burst: the server reads these in one loop turn
        await start(ws, "quick")
        await send_audio(ws, "quick", mono.tobytes(), chunk=len(mono.tobytes()))
        await ws.send_str(json.dumps({"type": "end", "request_id": "quick"}))
        await start(ws, "gone")
        await ws.send_bytes(encode_binary("gone", mono.tobytes()[:3200]))
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "gone"}))
        frames = await collect(ws, ["quick", "gone"])
    assert [f["text"] for f in finals(frames["quick"])] == ["stop the music"]
    assert frames["quick"][-1]["usage"]["audio_ms"] == mono.size // 16
    assert [f["type"] for f in frames["gone"]] == ["error"]
    assert frames["gone"][0]["error"]["finish_reason"] == "cancelled"


@pytest.mark.parametrize("encoding", ["wav", "flac", "ogg"])
async def test_containers_are_transcribed_too(
    sluice: Any, spoken: dict[str, np.ndarray], lm_dir: Path, encoding: str
) -> None:
    mono, _ = utterances(spoken, ["open the garage door", "stop the music"], gap=700)
    native = resample(mono, RATE, 22050)  # espeak's own rate: resampled by Sluice
    if encoding == "wav":
        blob = wav_bytes(native.tobytes(), 22050)
    else:
        out = io.BytesIO()
        fmt, subtype = ("FLAC", "PCM_16") if encoding == "flac" else ("OGG", "VORBIS")
        sf.write(out, native, 22050, format=fmt, subtype=subtype)
        blob = out.getvalue()
    client = await sluice(listen_config([local_model(lm_dir, SENTENCES)]))
    async with client.ws_connect("/v1/speech/speech/listen") as ws:
        body = {"type": "listen", "request_id": "c", "format": {"encoding": encoding}}
        await ws.send_str(json.dumps(body))
        await send_audio(ws, "c", blob, chunk=4096)
        await ws.send_str(json.dumps({"type": "end", "request_id": "c"}))
        frames = (await collect(ws, ["c"]))["c"]
    check_event_order(frames)
    assert [f["text"] for f in finals(frames)] == ["open the garage door", "stop the music"]
    assert abs(frames[-1]["usage"]["audio_ms"] - mono.size // 16) <= 1


async def test_a_resumed_listen_request_gets_every_transcript_it_missed(
    sluice: Any, spoken: dict[str, np.ndarray], lm_dir: Path
) -> None:
    texts = SENTENCES[:2]
    mono, _ = utterances(spoken, texts)
    pcm = mono.tobytes()
    half = len(pcm) // 2 // 2 * 2
    client = await sluice(listen_config([local_model(lm_dir, SENTENCES)]))
    url = "/v1/speech/speech/listen"
    ws = await client.ws_connect(url)
    await start(ws, "l1")
    await send_audio(ws, "l1", pcm[:half], chunk=3200)
    first = await receive(ws, 20)
    sock = ws.get_extra_info("socket")
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)  # the network drops: the request runs on
    await ws.close()
    async with client.ws_connect(url) as again:
        await again.send_str(json.dumps({"type": "resume", "request_id": "l1", "after_seq": 1}))
        # the audio the server never got is the client's to send, after the resume
        await send_audio(again, "l1", pcm[half:], chunk=3200)
        await again.send_str(json.dumps({"type": "end", "request_id": "l1"}))
        frames = (await collect(again, ["l1"]))["l1"]
    whole = [first, *frames]
    assert first["seq"] == 1
    assert [f["seq"] for f in whole] == list(range(1, len(whole) + 1))
    check_event_order(whole)
    assert [f["text"] for f in finals(whole)] == texts
