"""The converse suite: voice-to-voice latency through Sluice, split into its stages.

Parties, each its own process: the fake upstreams (`fakes.stt_servers` OpenAI
transcriptions, `fakes.openai_server` chat, `fakes.tts_servers` OpenAI speech, all
in `python -m benchmarks.converse fake-upstreams`) and the load client (`python -m
benchmarks.converse client <spec>`) share the load cores; Sluice (`server.py serve`
with a generated config: agent router `talk` over them) runs on the gateway core.

Per concurrency level, `level` conversations run at once, each on its own websocket,
each `turns` turns long. How they arrive is the cell's `arrival`: `together` starts
them all at once, so their users stop speaking within the same 20 ms and every
end-of-turn burst (STT upload, chat stream, TTS call, reply audio) lands on Sluice
at the same instant: the worst case; `spread` starts each at a seeded random offset
within one turn's length, as independent users would. Levels from `SPREAD_FROM` up
run both (spread first), smaller levels `together` only; `--together` runs every
level together only. A turn streams espeak-ng speech (then silence) in real
time, 20 ms frames at 16 kHz, each sent when a microphone would hand it over (when
its last sample has been spoken), and waits for `turn_ended`. The client stamps:

- end of speech: the instant the last audible sample (above -60 dBFS; espeak ends
  its speech with a few ms of +-1 noise no listener hears) was spoken, on the same
  real-time clock the frames are sent by; the wait for the 20 ms frame that holds
  it (0-20 ms) is part of what Sluice adds, as a client with 20 ms frames sees it;
- `speech_ended` (the VAD's hangover), the final `transcript` (STT), the first
  `reply_text` that completes a sentence (LLM first sentence), the first reply
  audio byte (TTS first audio) as they arrive.

Voice-to-voice = end of speech -> first reply audio byte. The fakes' own times are
fixed by their scripts (STT answers after `stt_delay_ms`, the chat model sends each
chunk after `chat_delay_ms`, the TTS its first chunk after `tts_delay_ms`) and the
VAD's hangover is config (`hangover_ms`): engines = their sum; Sluice adds =
voice-to-voice - engines (the hops on loopback, the pipeline, the sentence
splitter's wait, frame granularity).

    run(ctx, settings) -> {"settings", "layout", "cells", ...}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import time
from array import array
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.chat import Context, _start_sluice
from benchmarks.common import (
    Child,
    core_layout,
    cpu_seconds,
    fmt,
    free_port,
    memory_kb,
    reset_peak_rss,
    wait_for_port,
    wait_idle,
)
from benchmarks.loadgen import summarize

FULL_LEVELS = (1, 10, 50)
QUICK_LEVELS = (1, 10)
REPLY = ["It is noon.", " Anything else?"]
SPEECH = "what time is it"
FRAME_MS = 20
RATE = 16000
STAGES = ("vad_ms", "stt_ms", "llm_ms", "tts_ms")
SPREAD_FROM = 50
"""Levels from here up also run with spread arrivals (the default figure at 50)."""
QUICK_SPREAD_FROM = 10
"""The same for `--quick` (so the smoke run has a spread cell)."""
SEED = 1


@dataclass
class ConverseSettings:
    """Everything that shapes a converse run; stored verbatim in the JSON."""

    levels: list[int]
    turns: int
    hangover_ms: int = 300
    stt_delay_ms: float = 50.0
    chat_delay_ms: float = 30.0
    tts_delay_ms: float = 20.0
    quick: bool = False
    together: bool = False
    seed: int = SEED
    profile: bool = False

    @classmethod
    def build(
        cls,
        *,
        quick: bool,
        levels: list[int] | None,
        turns: int | None,
        together: bool = False,
        profile: bool = False,
    ) -> ConverseSettings:
        """Defaults for a full or a `--quick` run, overridden by what the user passed."""
        chosen = sorted(set(levels or (QUICK_LEVELS if quick else FULL_LEVELS)))
        return cls(
            levels=chosen,
            turns=turns or (2 if quick else 5),
            quick=quick,
            together=together,
            profile=profile,
        )

    def arrivals(self, level: int) -> list[str]:
        """How `level`'s conversations arrive, one cell each: `spread` then `together`
        from `SPREAD_FROM` up (unless `--together`), else `together`."""
        spread_from = QUICK_SPREAD_FROM if self.quick else SPREAD_FROM
        if level >= spread_from and not self.together:
            return ["spread", "together"]
        return ["together"]

    def engines_ms(self) -> float:
        """The engines' own share of voice-to-voice (hangover, STT, first chunk, TTS)."""
        return self.hangover_ms + self.stt_delay_ms + self.chat_delay_ms + self.tts_delay_ms

    def to_json(self) -> dict[str, Any]:
        """Plain data for the report."""
        return asdict(self)


def sluice_config(stt: int, chat: int, tts: int, settings: ConverseSettings, sockets: int) -> str:
    """The generated Sluice YAML: agent router `talk` over the three fakes."""
    client = "{timeout: 600s, first_chunk_timeout: 60s, idle_timeout: 60s}"
    return f"""# generated by benchmarks/converse.py for one run
server:
  host: 127.0.0.1
  log_level: warning
  max_pending_connections: {sockets}
  max_pending_per_peer: {sockets}
limits:
  max_sockets: {sockets}
routers:
  language:
    - id: lm
      retry: {{max_retries: 0}}
      models:
        - id: chat
          error_budget: 1000000/s
          client: {client}
          openai: {{base_url: "http://127.0.0.1:{chat}/v1", model: gpt-fake, api_key: sk-b}}
  speech:
    - id: sp
      retry: {{max_retries: 0}}
      speak:
        models:
          - id: tts
            error_budget: 1000000/s
            client: {client}
            openai: {{base_url: "http://127.0.0.1:{tts}/v1", model: tts-fake, api_key: sk-b}}
      listen:
        vad: {{hangover: {settings.hangover_ms}ms}}
        models:
          - id: stt
            error_budget: 1000000/s
            client: {client}
            openai: {{base_url: "http://127.0.0.1:{stt}/v1", api_key: sk-b}}
  agent:
    - id: talk
      listen: sp
      chat: lm
      speak: sp
      turn: {{max_history_messages: 4, interim_results: false}}
"""


# ---- the client process -----------------------------------------------------------------


class _Record:
    """What one cell's client saw, per turn (nanoseconds)."""

    def __init__(self) -> None:
        self.v2v: array[int] = array("q")
        self.stages: dict[str, array[int]] = {name: array("q") for name in STAGES}
        self.errors = 0
        self.error_samples: list[str] = []

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


AUDIBLE = 32
"""Peak amplitude (-60 dBFS) above which a sample counts as heard speech."""


def user_audio() -> tuple[bytes, int]:
    """The user's turn: 200 ms silence, espeak-ng speech, 1 s silence (PCM16 16 kHz), and
    the sample count up to the end of the last audible sample."""
    import numpy as np

    from tests.speech_audio import silence, speech_16k, synthesize

    speech = speech_16k(synthesize([SPEECH])[SPEECH])
    samples = np.concatenate([silence(200), speech, silence(1000)]).astype("<i2")
    audible = np.flatnonzero(np.abs(samples.astype(np.int32)) > AUDIBLE)
    return samples.tobytes(), int(audible[-1]) + 1


def turn_seconds(pcm: bytes) -> float:
    """One turn's length: the user's audio at real time."""
    return len(pcm) / (2 * RATE)


def offsets(arrival: str, count: int, seed: int, span: float) -> list[float]:
    """When each of `count` conversations (or direct chains) starts, in seconds from
    the cell's start: all at 0 (`together`), or seeded uniform in [0, span) (`spread`)."""
    if arrival == "together":
        return [0.0] * count
    draw = random.Random(seed)
    return [draw.uniform(0.0, span) for _ in range(count)]


async def _conversation(
    spec: dict[str, Any], pcm: bytes, speech_end: int, record: _Record, number: int, delay: float
) -> None:
    import aiohttp

    from protocol.messages import encode_binary

    await asyncio.sleep(delay)
    rid = f"c{number}"
    frame_bytes = RATE * FRAME_MS // 1000 * 2
    start = {
        "type": "converse",
        "request_id": rid,
        "format": {"encoding": "pcm_s16le", "sample_rate": RATE, "channels": 1},
        "output_format": {"encoding": "pcm_s16le", "sample_rate": 24000},
    }
    async with aiohttp.ClientSession() as http, http.ws_connect(spec["url"]) as ws:
        await ws.send_str(json.dumps(start))
        for _ in range(spec["turns"]):
            marks: dict[str, int] = {}
            turn_over = asyncio.Event()

            async def read(
                marks: dict[str, int] = marks, turn_over: asyncio.Event = turn_over
            ) -> None:
                text = ""
                while not turn_over.is_set():
                    msg = await ws.receive()
                    now = time.monotonic_ns()
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        marks.setdefault("audio", now)
                        continue
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        raise RuntimeError(f"socket closed: {msg.type}")
                    frame = json.loads(msg.data)
                    kind = frame["type"]
                    if kind == "speech_ended":
                        marks.setdefault("vad", now)
                    elif kind == "transcript" and frame["is_final"]:
                        marks.setdefault("stt", now)
                    elif kind == "reply_text":
                        text += frame["delta"]
                        if any(mark in text for mark in ".!?"):
                            marks.setdefault("llm", now)
                    elif kind == "turn_ended":
                        if frame["reason"] != "complete":
                            raise RuntimeError(json.dumps(frame))
                        turn_over.set()
                    elif kind == "error" and "finish_reason" in frame["error"]:
                        raise RuntimeError(json.dumps(frame["error"]))

            reader = asyncio.create_task(read())
            try:
                began = time.monotonic_ns()  # the instant the turn's first sample is spoken
                marks["eos"] = began + speech_end * 1_000_000_000 // RATE
                for k, offset in enumerate(range(0, len(pcm), frame_bytes)):
                    due = began + (k + 1) * FRAME_MS * 1_000_000  # the frame is full
                    await asyncio.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))
                    await ws.send_bytes(encode_binary(rid, pcm[offset : offset + frame_bytes]))
                    if reader.done():
                        break
                await asyncio.wait_for(reader, 60)
            except Exception as error:  # a failed turn is a figure, not a crash
                reader.cancel()
                record.fail(repr(error))
                return
            _count(record, marks)
        await ws.send_str(json.dumps({"type": "end", "request_id": rid}))


def _count(record: _Record, marks: dict[str, int]) -> None:
    needed = ("eos", "vad", "stt", "llm", "audio")
    if not all(k in marks for k in needed):
        record.fail(f"missing marks: {sorted(set(needed) - set(marks))}")
        return
    record.v2v.append(marks["audio"] - marks["eos"])
    record.stages["vad_ms"].append(marks["vad"] - marks["eos"])
    record.stages["stt_ms"].append(marks["stt"] - marks["vad"])
    record.stages["llm_ms"].append(marks["llm"] - marks["stt"])
    record.stages["tts_ms"].append(marks["audio"] - marks["llm"])


async def client(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell's conversations; figures as plain data (ms distributions, counts)."""
    pcm, speech_end = user_audio()
    record = _Record()
    started = time.monotonic()
    level = spec["concurrency"]
    starts = offsets(spec["arrival"], level, spec["seed"], turn_seconds(pcm))
    await asyncio.gather(
        *(_conversation(spec, pcm, speech_end, record, n, starts[n]) for n in range(level))
    )
    engines_ns = int(spec["engines_ms"] * 1e6)
    added = array("q", (v - engines_ns for v in record.v2v))
    return {
        "turns": len(record.v2v),
        "errors": record.errors,
        "error_samples": record.error_samples,
        "wall_s": round(time.monotonic() - started, 3),
        "v2v_ms": summarize(record.v2v),
        "added_ms": summarize(added),
        **{name: summarize(values) for name, values in record.stages.items()},
    }


DIRECT_ROUNDS = 10
SPREAD_ROUNDS = 4
"""Rounds of the direct reference with spread arrivals (each one turn long)."""


async def direct(spec: dict[str, Any]) -> dict[str, Any]:
    """The three engine calls made straight to the fakes, as Sluice makes them (the
    turn's segment as a WAV upload, a streamed chat answer up to the chunk that ends
    the first sentence, a PCM speech request up to its first byte), one after the
    other, by `concurrency` chains, `DIRECT_ROUNDS` times (`SPREAD_ROUNDS` spread):
    what the engines cost with loopback HTTP, the fakes' own timer overshoot and their
    share of the load core, with nothing in between. The remainder of a stage is
    Sluice's. The chains arrive as the conversations do (`arrival`): all at once
    each round (`together`, as the conversations' turns end together), or each at its
    seeded offset within a round one turn long (`spread`)."""
    import io
    import wave

    import aiohttp

    pcm, speech_end = user_audio()
    # about the segment Sluice uploads (the pre-roll reaches the stream's start): the
    # audio up to the end of speech plus the hangover
    segment = pcm[: 2 * (speech_end + RATE * 300 // 1000)]
    wav = io.BytesIO()
    with wave.open(wav, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(segment)
    stt, chat, tts = spec["ports"]
    stages: dict[str, array[int]] = {name: array("q") for name in ("stt_ms", "llm_ms", "tts_ms")}
    chains: array[int] = array("q")

    async def chain(http: aiohttp.ClientSession, delay: float) -> None:
        await asyncio.sleep(delay)
        form = aiohttp.FormData()
        form.add_field("file", wav.getvalue(), filename="audio.wav", content_type="audio/wav")
        form.add_field("model", "whisper-1")
        t0 = time.monotonic_ns()
        async with http.post(f"http://127.0.0.1:{stt}/v1/audio/transcriptions", data=form) as r:
            await r.json()
        t1 = time.monotonic_ns()
        body = {
            "model": "gpt-fake",
            "stream": True,
            "messages": [{"role": "user", "content": SPEECH}],
        }
        text = ""
        async with http.post(f"http://127.0.0.1:{chat}/v1/chat/completions", json=body) as r:
            async for line in r.content:
                data = line.decode().strip().removeprefix("data:").strip()
                if data.startswith("{"):
                    for choice in json.loads(data).get("choices", []):
                        text += (choice.get("delta") or {}).get("content") or ""
                if any(mark in text for mark in ".!?"):
                    break
        t2 = time.monotonic_ns()
        speech = {
            "model": "tts-fake",
            "input": REPLY[0],
            "voice": "alloy",
            "response_format": "pcm",
        }
        async with http.post(f"http://127.0.0.1:{tts}/v1/audio/speech", json=speech) as r:
            await r.content.readany()
        t3 = time.monotonic_ns()
        stages["stt_ms"].append(t1 - t0)
        stages["llm_ms"].append(t2 - t1)
        stages["tts_ms"].append(t3 - t2)
        chains.append(t3 - t0)

    auth = {"Authorization": "Bearer sk-b"}
    connector = aiohttp.TCPConnector(limit=0)
    arrival = spec.get("arrival", "together")
    starts = offsets(arrival, spec["concurrency"], spec.get("seed", SEED), turn_seconds(pcm))
    rounds = DIRECT_ROUNDS if arrival == "together" else SPREAD_ROUNDS
    async with aiohttp.ClientSession(headers=auth, connector=connector) as http:
        for _ in range(rounds):
            await asyncio.gather(*(chain(http, delay) for delay in starts))
            await asyncio.sleep(0.2)
    return {
        "rounds": rounds,
        "chain_ms": summarize(chains),
        **{k: summarize(v) for k, v in stages.items()},
    }


async def fake_upstreams(ports: list[int], settings: dict[str, Any]) -> None:
    """Serve the three fakes (STT, chat, TTS) on `ports` until killed."""
    from fakes.openai_server import FakeOpenAIScript, run_fake_openai
    from fakes.stt_servers import FakeSttScript, run_fake_transcription
    from fakes.tts_servers import FakeSpeechScript, run_fake_openai_speech

    stt_script = FakeSttScript(text=SPEECH, delay=settings["stt_delay_ms"] / 1e3)
    chat_script = FakeOpenAIScript(chunks=list(REPLY), delay=settings["chat_delay_ms"] / 1e3)
    tts_script = FakeSpeechScript(delay=settings["tts_delay_ms"] / 1e3)
    async with (
        run_fake_transcription(port=ports[0], script=stt_script),
        run_fake_openai(port=ports[1], script=chat_script),
        run_fake_openai_speech(port=ports[2], script=tts_script),
    ):
        await asyncio.Event().wait()


# ---- the orchestrator -------------------------------------------------------------------


def _cell(
    ctx: Context,
    settings: ConverseSettings,
    level: int,
    arrival: str,
    sluice: Child,
    url: str,
    load_cores: str,
) -> dict[str, Any]:
    spec = {
        "url": url,
        "concurrency": level,
        "arrival": arrival,
        "seed": settings.seed,
        "turns": settings.turns,
        "engines_ms": settings.engines_ms(),
    }
    wait_idle(sluice.pid)
    peak_reset = reset_peak_rss(sluice.pid)
    cpu0 = cpu_seconds(sluice.pid)
    argv = [ctx.python, "-m", "benchmarks.converse", "client", json.dumps(spec)]
    child = ctx.processes.start(
        f"client-converse-{level}", argv, cores=load_cores, capture_stdout=True
    )
    try:
        out, _ = child.popen.communicate(timeout=900)
    finally:
        ctx.processes.stop(child)
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    if child.popen.returncode != 0 or not lines:
        raise RuntimeError(
            f"converse client failed ({child.popen.returncode}):\n{child.log_tail()}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    cpu = cpu_seconds(sluice.pid) - cpu0
    mem = memory_kb(sluice.pid)
    result.update(concurrency=level, arrival=arrival)
    result["gateway_cpu_s"] = round(cpu, 3)
    result["gateway_cpu_ms_per_turn"] = (
        round(cpu * 1e3 / result["turns"], 3) if result["turns"] else None
    )
    result["gateway_peak_rss_mb"] = round(mem.get("VmHWM", 0) / 1024, 1)
    result["peak_rss_since"] = "cell" if peak_reset else "process start"
    return result


def run(ctx: Context, settings: ConverseSettings) -> dict[str, Any]:
    """Run the whole converse suite; every figure in one dict (see the module docstring)."""
    gateway_cores, load_cores = core_layout()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(c) for c in load_cores.split(",")})
    started = time.monotonic()
    ports = [free_port() for _ in range(3)]
    upstreams = ctx.processes.start(
        "converse-upstreams",
        [
            ctx.python,
            "-m",
            "benchmarks.converse",
            "fake-upstreams",
            *map(str, ports),
            "--settings",
            json.dumps(settings.to_json()),
        ],
        cores=load_cores,
    )
    for port in ports:
        wait_for_port(port, upstreams)
    config = ctx.log_dir / "converse-sluice.yaml"
    stt, chat, tts = ports
    config.write_text(sluice_config(stt, chat, tts, settings, max(settings.levels) * 2 + 100))
    profile_to = ctx.out_dir / f"converse-{ctx.stamp}.prof" if settings.profile else None
    gc_to = ctx.log_dir / "sluice-converse-gc.json" if settings.profile else None
    sluice, sluice_port = _start_sluice(
        ctx, config, gateway_cores, name="sluice-converse", profile_to=profile_to, gc_to=gc_to
    )
    url = f"ws://127.0.0.1:{sluice_port}/v1/agent/talk/converse"
    plan = [(level, arrival) for level in settings.levels for arrival in settings.arrivals(level)]
    ctx.progress.total = len(plan)
    cells = []
    try:
        for level, arrival in plan:
            ctx.progress.show(f"converse x{level} {arrival}")
            reference = _direct(ctx, ports, level, arrival, settings.seed, load_cores)
            cell = _cell(ctx, settings, level, arrival, sluice, url, load_cores)
            cell["direct"] = reference
            cells.append(cell)
            ctx.progress.step()
    finally:
        ctx.processes.stop(sluice)  # SIGTERM: under --profile the wrapper writes its files
        ctx.processes.stop(upstreams)
    profile = None
    if profile_to is not None:
        profile = {"raw": profile_to.name, "note": "figures taken under cProfile are slower"}
    return {
        "suite": "converse",
        "settings": settings.to_json(),
        "engines_ms": settings.engines_ms(),
        "layout": {
            "gateway_cores": gateway_cores,
            "load_cores": load_cores,
            "note": "one machine: Sluice pinned to its core(s); the load client and the "
            "fake upstreams share the other core(s)",
        },
        "cells": cells,
        "profile": profile,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def _direct(
    ctx: Context, ports: list[int], level: int, arrival: str, seed: int, load_cores: str
) -> dict[str, Any]:
    """The direct reference (`direct`) with `level` chains arriving as `arrival` says,
    in its own process."""
    spec = json.dumps({"ports": ports, "concurrency": level, "arrival": arrival, "seed": seed})
    argv = [ctx.python, "-m", "benchmarks.converse", "direct", spec]
    child = ctx.processes.start(
        "client-converse-direct", argv, cores=load_cores, capture_stdout=True
    )
    try:
        out, _ = child.popen.communicate(timeout=300)
    finally:
        ctx.processes.stop(child)
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    if child.popen.returncode != 0 or not lines:
        raise RuntimeError(f"direct client failed ({child.popen.returncode}):\n{child.log_tail()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _f(value: Any, digits: int = 1) -> str:
    return fmt(value, digits)


def _q(cell: dict[str, Any], dist: str, key: str) -> Any:
    return (cell.get(dist) or {}).get(key)


def markdown(result: dict[str, Any], command: str) -> str:
    """The converse table: voice-to-voice per level, its stages, and what Sluice adds."""
    s = result["settings"]
    m = result.get("machine", {})
    layout = result["layout"]
    lines = [
        "### converse: voice-to-voice latency (end of user speech -> first reply audio byte)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, Python "
        f"{m.get('python', '?')}, commit {str(m.get('git_commit') or '?')[:10]}.  ",
        f"Layout: Sluice on core {layout['gateway_cores']}, client + fakes on core "
        f"{layout['load_cores']}; loopback only.  ",
        f"Each conversation: {s['turns']} turns of espeak-ng speech streamed in real time. "
        "Engines (fixed by the fakes' scripts and config): VAD hangover "
        f"{s['hangover_ms']} ms, STT final {s['stt_delay_ms']:g} ms, LLM first chunk "
        f"{s['chat_delay_ms']:g} ms, TTS first audio {s['tts_delay_ms']:g} ms = "
        f"{result['engines_ms']:g} ms. Sluice adds = voice-to-voice - engines. Stage "
        "columns are p50 as the client saw them (each includes its hop through Sluice). "
        "*Direct* is the reference without Sluice: the client makes the same STT, chat "
        "and TTS calls to the fakes itself, as many chains at once as conversations, "
        f"{DIRECT_ROUNDS} rounds ({SPREAD_ROUNDS} spread); its p50 chain time is the "
        "engines' scripts plus loopback HTTP, the fakes' timer overshoot and their share "
        "of the load core. *Beyond direct* = voice-to-voice - hangover - direct (p50 from "
        "p50, p99 from p99: a difference of quantiles, not a quantile of differences): "
        "Sluice's own share, with the input framing (0-20 ms to the end of the 20 ms "
        "frame that holds the last sample). *Arrival*: `together` starts every "
        "conversation at once, so at 50 all users stop speaking within the same 20 ms "
        "(the worst case for the end-of-turn burst); `spread` starts each at a seeded "
        "random offset within one turn's length, as independent users would (the direct "
        "reference's chains arrive the same way).",
        "",
        "| conversations | arrival | turns | v2v p50 ms | v2v p99 ms | VAD | STT "
        "| LLM 1st sentence | TTS 1st audio | Sluice adds p50 | p99 | direct p50 | p99 "
        "| beyond direct p50 | p99 "
        "| CPU ms/turn | peak RSS MB | errors |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result["cells"]:
        d = c.get("direct") or {}

        def beyond(key: str, c: dict[str, Any] = c, d: dict[str, Any] = d) -> float | None:
            v2v, chain = _q(c, "v2v_ms", key), _q(d, "chain_ms", key)
            return None if v2v is None or chain is None else v2v - s["hangover_ms"] - chain

        lines.append(
            f"| {c['concurrency']} | {c.get('arrival', 'together')} | {c['turns']} "
            f"| {_f(_q(c, 'v2v_ms', 'p50'))} "
            f"| {_f(_q(c, 'v2v_ms', 'p99'))} | {_f(_q(c, 'vad_ms', 'p50'))} "
            f"| {_f(_q(c, 'stt_ms', 'p50'))} | {_f(_q(c, 'llm_ms', 'p50'))} "
            f"| {_f(_q(c, 'tts_ms', 'p50'))} | {_f(_q(c, 'added_ms', 'p50'))} "
            f"| {_f(_q(c, 'added_ms', 'p99'))} | {_f(_q(d, 'chain_ms', 'p50'))} "
            f"| {_f(_q(d, 'chain_ms', 'p99'))} | {_f(beyond('p50'))} | {_f(beyond('p99'))} "
            f"| {_f(c.get('gateway_cpu_ms_per_turn'), 2)} "
            f"| {_f(c.get('gateway_peak_rss_mb'))} | {c['errors']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """`fake-upstreams STT CHAT TTS --settings J` serves the fakes; `client <spec>` runs a
    cell; `direct <spec>` runs the direct reference."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.converse")
    sub = parser.add_subparsers(dest="command", required=True)
    fake = sub.add_parser("fake-upstreams")
    fake.add_argument("ports", type=int, nargs=3)
    fake.add_argument("--settings", required=True)
    cli = sub.add_parser("client")
    cli.add_argument("spec")
    ref = sub.add_parser("direct")
    ref.add_argument("spec")
    args = parser.parse_args(argv)
    if args.command == "fake-upstreams":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(fake_upstreams(args.ports, json.loads(args.settings)))
        return
    run_it = direct if args.command == "direct" else client
    result = asyncio.run(run_it(json.loads(args.spec)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
