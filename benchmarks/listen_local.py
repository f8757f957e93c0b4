"""Listen on the embedded engine: end-of-speech -> final-transcript time, and CPU per stream.

Starts `sluice serve` in a child process with one speech router (pocketsphinx
with an in-domain language model), then streams N real-time listen requests
over one websocket: 20 ms frames of espeak-ng speech (three sentences, 700 ms
apart), each frame sent at its real-time instant. For every segment it records

- end of speech -> final transcript: from the instant the client sent the last
  voiced sample (the segment's `end_ms` on the stream's clock) to the final
  transcript's arrival; this includes the VAD's 300 ms hangover;
- speech_ended -> final: from the `speech_ended` frame's arrival to the final
  (decoding plus everything Sluice adds);

and the server's CPU time (user + system, from /proc) over the streaming phase,
divided by the seconds of audio streamed.

    python -m benchmarks.listen_local --streams 1 10 25 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from protocol.messages import encode_binary
from tests.speech_audio import build_dict, build_lm, silence, speech_16k, synthesize

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "turn on the kitchen lights",
    "what is the weather tomorrow",
    "open the garage door",
    "read me the news",
    "stop the music",
    "call my sister on the phone",
]
FRAME = 640  # 20 ms at 16 kHz
TICK = 0.02


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _config(directory: Path, port: int, workers: int) -> Path:
    lm, words = build_lm(SENTENCES, directory), build_dict(SENTENCES, directory)
    config = {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "routers": {
            "speech": [
                {
                    "id": "bench",
                    "listen": {
                        "models": [
                            {
                                "id": "local",
                                "local": {"lm_path": lm, "dict_path": words, "workers": workers},
                            }
                        ]
                    },
                }
            ]
        },
    }
    path = directory / "sluice.json.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def _streams(count: int, spoken: dict[str, np.ndarray]) -> list[tuple[list[str], bytes]]:
    out = []
    for i in range(count):
        texts = [SENTENCES[(i + k) % len(SENTENCES)] for k in range(3)]
        parts = [silence(200 + (i * 37) % 700)]
        for text in texts:
            parts += [spoken[text], silence(700)]
        out.append((texts, np.concatenate(parts).tobytes()))
    return out


async def _run(url: str, streams: list[tuple[list[str], bytes]], pid: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    arrivals: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    done: set[str] = set()
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        ids = [f"s{i}" for i in range(len(streams))]

        async def reader() -> None:
            while len(done) < len(ids):
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"unexpected {msg.type}")
                frame = json.loads(msg.data)
                arrivals.setdefault(frame["request_id"], []).append((loop.time(), frame))
                if frame["type"] == "done" or (
                    frame["type"] == "error" and "finish_reason" in frame["error"]
                ):
                    done.add(frame["request_id"])

        reading = asyncio.create_task(reader())
        for rid in ids:
            body = {"type": "listen", "request_id": rid, "format": {"sample_rate": 16000}}
            await ws.send_str(json.dumps(body))
        cpu0, t0 = _cpu_seconds(pid), loop.time()
        longest = max(len(pcm) for _, pcm in streams)
        for k, offset in enumerate(range(0, longest, FRAME)):
            delay = t0 + k * TICK - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for rid, (_, pcm) in zip(ids, streams, strict=True):
                if offset < len(pcm):
                    await ws.send_bytes(encode_binary(rid, pcm[offset : offset + FRAME]))
        for rid in ids:
            await ws.send_str(json.dumps({"type": "end", "request_id": rid}))
        await asyncio.wait_for(reading, 60)
        cpu1, t1 = _cpu_seconds(pid), loop.time()

    to_final, after_vad, wrong = [], [], 0
    for rid, (texts, _) in zip(ids, streams, strict=True):
        frames = arrivals[rid]
        ended = {f["segment_id"]: t for t, f in frames if f["type"] == "speech_ended"}
        finals = [(t, f) for t, f in frames if f["type"] == "transcript" and f["is_final"]]
        heard = [f["text"] for _, f in finals]
        if heard != texts:
            wrong += 1
            print(f"{rid}: expected {texts}, heard {heard}", file=sys.stderr)
        for t, f in finals:
            to_final.append(t - (t0 + f["end_ms"] / 1000))
            after_vad.append(t - ended[f["segment_id"]])
    audio_seconds = sum(len(pcm) for _, pcm in streams) / 32000
    return {
        "streams": len(streams),
        "segments": len(to_final),
        "wrong_transcripts": wrong,
        "end_of_speech_to_final_ms": _summary(to_final),
        "speech_ended_to_final_ms": _summary(after_vad),
        "audio_seconds": round(audio_seconds, 1),
        "wall_seconds": round(t1 - t0, 1),
        "server_cpu_seconds": round(cpu1 - cpu0, 2),
        "server_cpu_ms_per_audio_second": round(1000 * (cpu1 - cpu0) / audio_seconds, 1),
    }


def _summary(values: list[float]) -> dict[str, float]:
    ms = sorted(1000 * v for v in values)
    return {
        "p50": round(statistics.median(ms), 1),
        "p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
        "max": round(ms[-1], 1),
    }


async def _wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"{base}/v1/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not start")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one JSON line per stream count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 25])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    spoken = {t: speech_16k(a) for t, a in synthesize(SENTENCES).items()}
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        config = _config(Path(tmp), port, args.workers)
        server = subprocess.Popen(
            [sys.executable, "server.py", "serve", "--config", str(config), "--port", str(port)],
            cwd=ROOT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(_wait_ready(base))
            url = f"ws://127.0.0.1:{port}/v1/speech/bench/listen"
            asyncio.run(_run(url, _streams(1, spoken), server.pid))  # warm-up: decoder creation
            for count in args.streams:
                result = asyncio.run(_run(url, _streams(count, spoken), server.pid))
                result["workers"] = args.workers
                print(json.dumps(result), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    time.sleep(0)


if __name__ == "__main__":
    main()
