"""The listen suite: many real-time audio streams through Sluice, and what it adds.

Parties, each its own process: the fake OpenAI transcription upstream
(`fakes.stt_servers`, served by `python -m benchmarks.listen fake-upstream`, which
answers every segment after a known `delay` and records when it had the whole
segment) and the load client (`python -m benchmarks.listen client <spec>`) share
the load cores; Sluice (`server.py serve` with a generated config: speech router
`fake` on the upstream, speech router `local` on pocketsphinx with an in-domain
language model) runs on the gateway core.

Audio: espeak-ng speech at 16 kHz (sentences 700 ms apart, a per-stream lead-in of
200-900 ms of silence so streams do not end speech in phase, and +-8 LSB of
per-stream noise so segments' checksums - the fake's "transcript" - rarely collide;
the few that do are left out of the inbound figure).
Every stream has its own websocket and one `listen` request; a single ticker sends
one 20 ms frame of every stream each 20 ms (real time) and stamps each send.

Per segment (VAD: 20 ms frames, 300 ms hangover):

- end of speech -> final: the final transcript's arrival minus the send time of the
  frame holding the last voiced sample (`end_ms`); includes the VAD's hangover;
- added by Sluice: the final's arrival minus the send time of the frame that let
  the VAD close the segment (`end_ms + hangover`), minus the provider's own time:
  the fake's configured delay; for the local engine, the median time pocketsphinx
  alone takes to decode that sentence's segment in-process (measured before the
  cells, same LM) - an estimate, since Sluice's decode runs on another core;
- inbound (fake only): the time the fake had the whole segment minus the send time
  of the segment's last frame: how long a frame spends inside Sluice before it
  reaches the provider (VAD, WAV encoding, the HTTP upload);
- client lag: how late the ticker sent frames against the real-time schedule (when
  this grows, the client, not Sluice, is the limit).

Concurrency steps up (10, 50, 100, 200, 400, 800 by default) per engine within a time
budget until p99 of the added time degrades: over twice its p99 at the first level
and 50 ms above it, or more than 1 % of segments missing or failed. Sluice's CPU
per second of audio and its peak RSS come from /proc over each cell.

    python -m benchmarks listen [--quick] [--concurrency 10,50] [--budget 120]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.chat import Context, _start_sluice
from benchmarks.common import (
    core_layout,
    fmt,
    free_port,
    machine_line,
    reset_tree_peak_rss,
    tree_cpu_seconds,
    tree_memory_kb,
    wait_for_port,
    wait_idle,
)
from benchmarks.loadgen import summarize

SENTENCES = [
    "turn on the kitchen lights",
    "what is the weather tomorrow",
    "open the garage door",
    "read me the news",
    "stop the music",
    "call my sister on the phone",
]
ENGINES = ("fake", "local")
FULL_LEVELS = (10, 50, 100, 200, 400, 800)
QUICK_LEVELS = (2, 5)
RATE = 16000
FRAME = 640  # bytes: 20 ms at 16 kHz
TICK_MS = 20
HANGOVER_MS = 300
PREROLL_MS = 300
GAP_MS = 700
NOISE = 8
"""+- LSB of per-stream noise: makes each segment's checksum (the fake's transcript) unique."""
DEGRADED_FACTOR = 2.0
DEGRADED_FLOOR_MS = 50.0
MAX_FAILED_SHARE = 0.01


@dataclass
class ListenSettings:
    """Everything that shapes a listen run; stored verbatim in the JSON."""

    levels: list[int]
    budget_s: float
    sentences_per_stream: int
    provider_delay_ms: float = 50.0
    workers: int = 1
    gateway_workers: int = 1
    """Sluice processes: 1 = one process on the gateway core; N = `--workers N` on
    every core, which the client and the fake upstream then share."""
    quick: bool = False
    engines: list[str] = field(default_factory=lambda: list(ENGINES))

    @classmethod
    def build(
        cls,
        *,
        quick: bool,
        levels: list[int] | None,
        budget: float | None,
        gateway_workers: int = 1,
    ) -> ListenSettings:
        """Defaults for a full or a `--quick` run, overridden by what the user passed."""
        chosen = sorted(set(levels or (QUICK_LEVELS if quick else FULL_LEVELS)))
        return cls(
            levels=chosen,
            budget_s=budget if budget is not None else (60.0 if quick else 240.0),
            sentences_per_stream=1 if quick else 3,
            gateway_workers=gateway_workers,
            quick=quick,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain data for the report."""
        return asdict(self)


def sluice_config(upstream: int, lm: str, words: str, workers: int, max_sockets: int) -> str:
    """The generated Sluice YAML: speech routers `fake` (the upstream) and `local`."""
    vad = f"{{frame_ms: {TICK_MS}, hangover: {HANGOVER_MS}ms, preroll: {PREROLL_MS}ms}}"
    client = "{timeout: 600s, first_chunk_timeout: 120s, idle_timeout: 120s}"
    return f"""# generated by benchmarks/listen.py for one run
server:
  host: 127.0.0.1
  log_level: warning
  # every stream connects from one address at once, as through a proxy
  max_pending_connections: {max_sockets}
  max_pending_per_peer: {max_sockets}
limits:
  max_sockets: {max_sockets}
routers:
  speech:
    - id: fake
      retry: {{max_retries: 0}}
      listen:
        vad: {vad}
        models:
          - id: upstream
            error_budget: 1000000/s
            client: {client}
            openai: {{base_url: "http://127.0.0.1:{upstream}/v1", model: stt-fake,
                      api_key: sk-bench}}
    - id: local
      retry: {{max_retries: 0}}
      listen:
        vad: {vad}
        models:
          - id: local
            error_budget: 1000000/s
            client: {client}
            local: {{lm_path: "{lm}", dict_path: "{words}", workers: {workers}}}
"""


# ---- audio ------------------------------------------------------------------------------


def prepare_audio(directory: Path) -> Path:
    """espeak-ng speech of every sentence at 16 kHz, saved as one .npz (keys = sentences)."""
    from tests.speech_audio import speech_16k, synthesize

    path = directory / "listen-sentences.npz"
    spoken = {text: speech_16k(audio) for text, audio in synthesize(SENTENCES).items()}
    arrays: dict[str, Any] = {str(i): spoken[text] for i, text in enumerate(SENTENCES)}
    np.savez(path, **arrays)
    return path


def load_audio(path: Path) -> dict[str, np.ndarray]:
    """The sentences saved by `prepare_audio`."""
    with np.load(path) as data:
        return {text: data[str(i)] for i, text in enumerate(SENTENCES)}


def build_stream(
    index: int, spoken: dict[str, np.ndarray], sentences: int
) -> tuple[list[str], bytes]:
    """Stream `index`: its sentences and its PCM (lead-in, speech, gaps, per-stream noise)."""
    texts = [SENTENCES[(index + k) % len(SENTENCES)] for k in range(sentences)]
    parts = [np.zeros(RATE * (200 + (index * 37) % 700) // 1000, dtype=np.int16)]
    for text in texts:
        parts += [spoken[text], np.zeros(RATE * GAP_MS // 1000, dtype=np.int16)]
    pcm = np.concatenate(parts).astype(np.int32)
    noise = np.random.default_rng(index).integers(-NOISE, NOISE + 1, size=pcm.size)
    return texts, np.clip(pcm + noise, -32768, 32767).astype("<i2").tobytes()


def decode_times(lm: str, words: str, spoken: dict[str, np.ndarray]) -> dict[str, float]:
    """Median ms pocketsphinx alone takes per sentence's segment (pre-roll + speech + hangover)."""
    from config.models import PocketsphinxConfig
    from providers.stt_local import PocketsphinxProvider

    provider = PocketsphinxProvider(PocketsphinxConfig(lm_path=lm, dict_path=words))
    out = {}
    for text, audio in spoken.items():
        pad = np.zeros(RATE * PREROLL_MS // 1000, dtype=np.int16)
        pcm = np.concatenate([pad, audio, pad]).astype("<i2").tobytes()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            provider._decode(pcm)
            times.append((time.perf_counter() - start) * 1e3)
        out[text] = round(statistics.median(times), 2)
    return out


# ---- the fake upstream ------------------------------------------------------------------


class _StampedAudio(list):  # type: ignore[type-arg]
    """The fake's `stats.audio`: every segment appended is stamped (time_ns, transcript)."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[int, str]] = []

    def append(self, pcm: bytes) -> None:
        """Stamp the segment instead of keeping its audio (the run would hold it all)."""
        from fakes.stt_servers import describe_pcm

        self.stamps.append((time.time_ns(), describe_pcm(pcm)))


async def fake_upstream(port: int, delay_s: float) -> None:
    """Serve the fake transcription upstream on `port`; `GET /bench/stamps` drains stamps."""
    from aiohttp import web

    from fakes.common import serve_app
    from fakes.stt_servers import STATS, FakeSttScript, make_fake_transcription_app

    app = make_fake_transcription_app(FakeSttScript(delay=delay_s))
    audio = _StampedAudio()
    app[STATS].audio = audio

    async def stamps(request: web.Request) -> web.Response:
        taken, audio.stamps = audio.stamps, []
        return web.json_response(taken)

    app.router.add_get("/bench/stamps", stamps)
    async with serve_app(app, "127.0.0.1", port):
        await asyncio.Event().wait()


# ---- the client process -----------------------------------------------------------------


async def client(spec: dict[str, Any]) -> dict[str, Any]:
    """Stream `spec["streams"]` real-time listen requests; per-segment raw timings out."""
    import aiohttp

    from protocol.messages import encode_binary

    spoken = load_audio(Path(spec["audio"]))
    streams = [build_stream(i, spoken, spec["sentences"]) for i in range(spec["streams"])]
    count = len(streams)
    sends = [array("q") for _ in range(count)]
    finals: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    errors: list[str] = []
    done = [asyncio.Event() for _ in range(count)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sockets = await asyncio.gather(
            *(http.ws_connect(spec["url"], max_msg_size=0) for _ in range(count))
        )

        async def reader(i: int) -> None:
            ws = sockets[i]
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                at = time.time_ns()
                if frame["type"] == "transcript" and frame.get("is_final"):
                    finals[i].append({**frame, "at": at})
                elif frame["type"] == "error":
                    if len(errors) < 20:
                        errors.append(json.dumps(frame["error"])[:300])
                    if "finish_reason" in frame["error"]:
                        break
                elif frame["type"] == "done":
                    break
            done[i].set()

        readers = [asyncio.create_task(reader(i)) for i in range(count)]
        start = {"type": "listen", "request_id": "s", "format": {"sample_rate": RATE}}
        await asyncio.gather(*(ws.send_str(json.dumps(start)) for ws in sockets))
        lag: array[int] = array("q")
        longest = max(len(pcm) for _, pcm in streams)
        t0 = time.time_ns() + 50_000_000
        for k, offset in enumerate(range(0, longest, FRAME)):
            due = t0 + k * TICK_MS * 1_000_000
            wait = (due - time.time_ns()) / 1e9
            if wait > 0:
                await asyncio.sleep(wait)
            for i, (ws, (_, pcm)) in enumerate(zip(sockets, streams, strict=True)):
                if offset < len(pcm):
                    now = time.time_ns()
                    sends[i].append(now)
                    lag.append(max(0, now - due))
                    await ws.send_bytes(encode_binary("s", pcm[offset : offset + FRAME]))
        for ws in sockets:
            await ws.send_str(json.dumps({"type": "end", "request_id": "s"}))
        timed_out = 0
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in done)), spec["tail_s"])
        except TimeoutError:
            timed_out = sum(not e.is_set() for e in done)
        for task in readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    segments = []
    for i, (texts, _) in enumerate(streams):
        frames = sends[i]
        for f in finals[i]:
            close_ms = f["end_ms"] + HANGOVER_MS
            last_voiced = min(len(frames) - 1, max(0, (f["end_ms"] - 1) // TICK_MS))
            closing = min(len(frames) - 1, max(0, close_ms // TICK_MS - 1))
            segments.append(
                {
                    "stream": i,
                    "segment_id": f["segment_id"],
                    "text": f["text"],
                    "expected": texts[f["segment_id"]] if f["segment_id"] < len(texts) else None,
                    "eos_to_final_ns": f["at"] - frames[last_voiced],
                    "close_to_final_ns": f["at"] - frames[closing],
                    "closing_frame_sent_ns": frames[closing],
                }
            )
    return {
        "streams": count,
        "segments_expected": count * spec["sentences"],
        "segments": segments,
        "errors": errors,
        "timed_out_streams": timed_out,
        "audio_seconds": round(sum(len(p) for _, p in streams) / (2 * RATE), 2),
        "client_lag_ms": summarize(lag),
    }


# ---- the orchestrator -------------------------------------------------------------------


def _stamps(port: int) -> list[tuple[int, str]]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/stamps", timeout=10) as resp:
        return [(int(at), str(text)) for at, text in json.loads(resp.read())]


def _cell(
    ctx: Context,
    settings: ListenSettings,
    engine: str,
    level: int,
    endpoints: dict[str, Any],
    load_cores: str,
) -> dict[str, Any]:
    """One cell: `level` concurrent real-time streams on router `engine`."""
    sluice = endpoints["sluice"]
    spec = {
        "url": f"ws://127.0.0.1:{endpoints['sluice_port']}/v1/speech/{engine}/listen",
        "streams": level,
        "sentences": settings.sentences_per_stream,
        "audio": str(endpoints["audio"]),
        "tail_s": 60.0,
    }
    wait_idle(sluice.pid)
    if engine == "fake":
        _stamps(endpoints["upstream_port"])  # drop anything left over
    peak_reset = reset_tree_peak_rss(sluice.pid)
    cpu0 = tree_cpu_seconds(sluice.pid)
    wall0 = time.monotonic()
    argv = [ctx.python, "-m", "benchmarks.listen", "client", json.dumps(spec)]
    child = ctx.processes.start(
        f"client-listen-{engine}", argv, cores=load_cores, capture_stdout=True
    )
    try:
        out, _ = child.popen.communicate(timeout=600)
    finally:
        ctx.processes.stop(child)
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    if child.popen.returncode != 0 or not lines:
        raise RuntimeError(f"listen client failed ({child.popen.returncode}):\n{child.log_tail()}")
    raw: dict[str, Any] = json.loads(lines[-1])
    wall = time.monotonic() - wall0
    cpu = tree_cpu_seconds(sluice.pid) - cpu0
    mem = tree_memory_kb(sluice.pid)
    segments = raw.pop("segments")
    eos, close, added, inbound = array("q"), array("q"), array("q"), array("q")
    wrong = 0
    ambiguous = 0
    if engine == "fake":
        stamps = _stamps(endpoints["upstream_port"])
        counts = Counter(text for _, text in stamps)
        counts.update(seg["text"] for seg in segments)
        received = {text: at for at, text in stamps}
        own_ms = {None: settings.provider_delay_ms}
    else:
        own_ms = endpoints["decode_ms"]
    for seg in segments:
        eos.append(seg["eos_to_final_ns"])
        close.append(seg["close_to_final_ns"])
        if engine == "fake":
            at = received.get(seg["text"])
            if at is None:
                wrong += 1
                continue
            if counts[seg["text"]] == 2:  # once at the fake, once at the client: unambiguous
                inbound.append(at - seg["closing_frame_sent_ns"])
            else:
                ambiguous += 1
            provider_ms = own_ms[None]
        else:
            if seg["text"] != seg["expected"]:
                wrong += 1
            provider_ms = own_ms.get(seg["expected"], 0.0)
        added.append(seg["close_to_final_ns"] - int(provider_ms * 1e6))
    expected = raw["segments_expected"]
    failed = expected - len(segments) + wrong
    return {
        "engine": engine,
        "concurrency": level,
        "segments": len(segments),
        "segments_expected": expected,
        "wrong_or_unmatched": wrong,
        "failed_share": round(failed / expected, 4) if expected else None,
        "errors": raw["errors"],
        "timed_out_streams": raw["timed_out_streams"],
        "audio_seconds": raw["audio_seconds"],
        "provider_own_ms": (
            settings.provider_delay_ms
            if engine == "fake"
            else "in-process decode median per sentence"
        ),
        "eos_to_final_ms": summarize(eos),
        "close_to_final_ms": summarize(close),
        "added_ms": summarize(added),
        "inbound_ms": summarize(inbound) if inbound else None,
        "inbound_skipped_ambiguous": ambiguous,
        "client_lag_ms": raw["client_lag_ms"],
        "gateway_cpu_s": round(cpu, 3),
        "gateway_cpu_ms_per_audio_s": round(cpu * 1e3 / raw["audio_seconds"], 2),
        "gateway_core_util": round(cpu / wall, 3) if wall else None,
        "gateway_peak_rss_mb": round(mem.get("VmHWM", 0) / 1024, 1),
        "peak_rss_since": "cell" if peak_reset else "process start",
        "wall_s": round(wall, 2),
    }


def degraded(cell: dict[str, Any], baseline: dict[str, Any]) -> str | None:
    """Why `cell` counts as degraded against the engine's first level, or None."""
    if (cell["failed_share"] or 0) > MAX_FAILED_SHARE or cell["timed_out_streams"]:
        return f"{cell['failed_share']:.1%} of segments missing or wrong"
    p99, base = cell["added_ms"].get("p99"), baseline["added_ms"].get("p99")
    if p99 is None or base is None:
        return "no segments"
    if p99 > DEGRADED_FACTOR * base and p99 > base + DEGRADED_FLOOR_MS:
        return f"added p99 {p99:.0f} ms vs {base:.0f} ms at {baseline['concurrency']} streams"
    return None


def run(ctx: Context, settings: ListenSettings) -> dict[str, Any]:
    """Run the whole listen suite; every figure in one dict (see the module docstring)."""
    from tests.speech_audio import build_dict, build_lm

    gateway_cores, load_cores = core_layout()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(c) for c in load_cores.split(",")})
    started = time.monotonic()
    ctx.progress.total = len(settings.engines) * len(settings.levels) + 1
    ctx.progress.show("listen: speech audio, LM, decode times")
    audio = prepare_audio(ctx.log_dir)
    lm, words = build_lm(SENTENCES, ctx.log_dir), build_dict(SENTENCES, ctx.log_dir)
    decode_ms = decode_times(lm, words, load_audio(audio))
    ctx.progress.step()
    port = free_port()
    argv = [ctx.python, "-m", "benchmarks.listen", "fake-upstream", "--port", str(port)]
    argv += ["--delay-ms", str(settings.provider_delay_ms)]
    upstream = ctx.processes.start("stt-upstream", argv, cores=load_cores)
    wait_for_port(port, upstream)
    config = ctx.log_dir / "listen-sluice.yaml"
    config.write_text(
        sluice_config(port, lm, words, settings.workers, 2 * max(settings.levels) + 100)
    )
    if settings.gateway_workers > 1:
        gateway_cores = ",".join(sorted({*gateway_cores.split(","), *load_cores.split(",")}))
    sluice, sluice_port = _start_sluice(
        ctx, config, gateway_cores, name="sluice-listen", workers=settings.gateway_workers
    )
    endpoints = {
        "sluice": sluice,
        "sluice_port": sluice_port,
        "upstream_port": port,
        "audio": audio,
        "decode_ms": decode_ms,
    }
    cells: list[dict[str, Any]] = []
    capacity: dict[str, Any] = {}
    try:
        for engine in settings.engines:
            ctx.progress.show(f"listen {engine} warm-up (1 stream, not counted)")
            _cell(ctx, settings, engine, 1, endpoints, load_cores)
            engine_started = time.monotonic()
            baseline: dict[str, Any] | None = None
            verdict: dict[str, Any] = {"sustains": None, "degrades_at": None, "reason": None}
            for level in settings.levels:
                spent = time.monotonic() - engine_started
                last = cells[-1]["wall_s"] if cells and baseline is not None else 0.0
                if baseline is not None and spent + last * 1.5 > settings.budget_s:
                    verdict["reason"] = f"time budget ({settings.budget_s:g} s) reached"
                    break
                ctx.progress.show(f"listen {engine} x{level}")
                cell = _cell(ctx, settings, engine, level, endpoints, load_cores)
                cells.append(cell)
                ctx.progress.step()
                baseline = baseline or cell
                why = degraded(cell, baseline)
                if why:
                    verdict.update(degrades_at=level, reason=why)
                    break
                verdict["sustains"] = level
            capacity[engine] = verdict
    finally:
        ctx.processes.stop(sluice)
        ctx.processes.stop(upstream)
    return {
        "suite": "listen",
        "settings": settings.to_json(),
        "layout": {
            "gateway_cores": gateway_cores,
            "load_cores": load_cores,
            "note": (
                "one machine: Sluice pinned to its core(s); the load client and the fake "
                "upstream share the other core(s); loopback only"
            ),
        },
        "local_decode_ms": decode_ms,
        "cells": cells,
        "capacity": capacity,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def _f(value: Any, digits: int = 1) -> str:
    return fmt(value, digits)


def _d(cell: dict[str, Any], dist: str, key: str) -> str:
    values = cell.get(dist) or {}
    return _f(values.get(key))


def markdown(result: dict[str, Any], command: str) -> str:
    """The listen tables: per cell, then the streams each engine sustains."""
    s = result["settings"]
    m = result.get("machine", {})
    layout = result["layout"]
    decode = result["local_decode_ms"]
    lines = [
        "### listen: real-time streams, end of speech -> final transcript",
        "",
        f"Command: `{command}`  ",
        machine_line(m),
        f"Layout: Sluice ({s.get('gateway_workers', 1)} process(es)) on core(s) "
        f"{layout['gateway_cores']}, client + fake upstream on core {layout['load_cores']} - "
        "one machine, loopback only.  ",
        f"Each stream: its own websocket, {s['sentences_per_stream']} espeak-ng sentence(s) "
        f"{GAP_MS} ms apart at 16 kHz, sent as 20 ms frames at real time; VAD hangover "
        f"{HANGOVER_MS} ms. fake = `fakes/stt_servers.py` OpenAI transcriptions answering "
        f"{s['provider_delay_ms']:g} ms after it has the segment; local = pocketsphinx "
        f"({s['workers']} worker) with an in-domain LM. EOS->final = last voiced frame sent -> "
        "final transcript (includes the hangover); added = frame that closed the segment sent "
        "-> final, minus the provider's own time (fake: its delay; local: the engine's "
        "in-process decode time per sentence, median "
        f"{statistics.median(decode.values()):.1f} ms - an estimate); inbound = frame that "
        "closed the segment sent -> the fake has the whole segment (time inside Sluice "
        "before the provider). CPU = Sluice's /proc time / seconds of audio streamed.",
        "",
        "| engine | streams | segments | EOS->final p50 | EOS->final p99 | added p50 | added p99"
        " | inbound p50 | inbound p99 | client lag p99 | CPU ms/audio s | gw core | peak RSS MB"
        " | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result["cells"]:
        lines.append(
            f"| {c['engine']} | {c['concurrency']} | {c['segments']}/{c['segments_expected']} "
            f"| {_d(c, 'eos_to_final_ms', 'p50')} | {_d(c, 'eos_to_final_ms', 'p99')} "
            f"| {_d(c, 'added_ms', 'p50')} | {_d(c, 'added_ms', 'p99')} "
            f"| {_d(c, 'inbound_ms', 'p50')} | {_d(c, 'inbound_ms', 'p99')} "
            f"| {_d(c, 'client_lag_ms', 'p99')} | {_f(c['gateway_cpu_ms_per_audio_s'])} "
            f"| {c['gateway_core_util']:.0%} | {_f(c['gateway_peak_rss_mb'])} "
            f"| {c['failed_share']:.1%} |"
        )
    lines += [
        "",
        "#### listen: real-time streams sustained before p99 degrades",
        "",
        "| engine | sustains | degrades at | why stepping stopped |",
        "|---|---:|---:|---|",
    ]
    for engine, v in result["capacity"].items():
        lines.append(
            f"| {engine} | {_f(v['sustains'])} | {_f(v['degrades_at'])} "
            f"| {v['reason'] or 'all levels passed'} |"
        )
    fake = result["capacity"].get("fake", {})
    if fake.get("sustains") is not None:
        sustains = fake["sustains"]
        if sustains >= 500:
            verdict = "met"
        elif fake.get("degrades_at") is None:
            verdict = f"not shown: every level tried passed, up to {sustains} streams"
        else:
            verdict = f"missed: {sustains} sustained, {500 - sustains} short"
        lines += [
            "",
            f"Target: 500 concurrent real-time listen streams (fake upstream): {verdict}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """`fake-upstream --port P --delay-ms D` serves the fake; `client <spec>` runs one cell."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.listen")
    sub = parser.add_subparsers(dest="command", required=True)
    fake = sub.add_parser("fake-upstream")
    fake.add_argument("--port", type=int, required=True)
    fake.add_argument("--delay-ms", type=float, default=50.0)
    cli = sub.add_parser("client")
    cli.add_argument("spec")
    args = parser.parse_args(argv)
    if args.command == "fake-upstream":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(fake_upstream(args.port, args.delay_ms / 1e3))
        return
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(client(json.loads(args.spec)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
