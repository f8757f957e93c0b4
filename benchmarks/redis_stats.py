"""What Sluice's request log on Redis (`--resume-redis`) costs Redis, per chat cell.

    before = snapshot(url)
    ... one cell against Sluice ...
    cost(url, before, snapshot(url), cell) -> {"round_trips_per_request", ...}

Round trips: the log's writes are `EVALSHA` calls (one per flush, carrying every
request with frames pending, and one per lease renewal for all running requests;
drops ride in a flush's round trip), so the `EVALSHA` calls counted by
`INFO commandstats` over the cell are its round trips (the benchmark's own `INFO`
and `SCAN` calls are not among them). Redis commands, by name, include the ones the
scripts run. Bytes in: `total_net_input_bytes`. Redis's CPU: `INFO cpu` (the whole
server process, so run it on a Redis of its own). Memory: `MEMORY USAGE` of the
finished streams of the cell's workload (and of their `:fence` and `:meta` keys)
still held for `retention`, over the frames they hold. The cell's requests and
chunks are the load client's totals (warm-up included, as the counters are).
"""

from __future__ import annotations

from typing import Any

from redis import Redis

PREFIX = "sluice:req:"
"""The request log's key prefix with `resume.redis` and no `state.redis`."""
SAMPLE = 200
"""Streams measured for memory per cell."""


def snapshot(url: str) -> dict[str, Any]:
    """Redis's counters now: calls per command, bytes received, memory used, CPU
    seconds (user + system, the whole server process)."""
    client = Redis.from_url(url)
    try:
        stats: Any = client.info("commandstats")
        calls = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if isinstance(value, dict)
        }
        net: Any = client.info("stats")
        memory: Any = client.info("memory")
        cpu: Any = client.info("cpu")
        return {
            "calls": calls,
            "net_input_bytes": int(net["total_net_input_bytes"]),
            "used_memory": int(memory["used_memory"]),
            "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        }
    finally:
        client.close()


def _frames_held(first: Any, last: Any) -> tuple[int, bool]:
    """Frames a stream holds (from its first and last entries) and whether it ended.

    An entry's id is the seq of its last frame; its `k` field has one kind per frame
    (`T`: the terminal frame)."""
    first_id, first_fields = first[0]
    last_id, last_fields = last[0]
    kinds_first = first_fields[b"k"]
    start = int(first_id.split(b"-")[1]) - len(kinds_first) + 1
    end = int(last_id.split(b"-")[1])
    return end - start + 1, last_fields[b"k"].endswith(b"T")


def stream_memory(url: str, router: str) -> dict[str, Any]:
    """Bytes of Redis memory per 1k frames over up to `SAMPLE` finished streams of
    `router` (stream + its fence and meta keys)."""
    client = Redis.from_url(url)
    try:
        metas: list[bytes] = []
        for key in client.scan_iter(match=f"{PREFIX}*:meta", count=1000):
            metas.append(key)
            if len(metas) >= SAMPLE * 20:
                break
        pipe = client.pipeline(transaction=False)
        for key in metas:
            pipe.get(key)
        wanted = f'"router":"{router}"'.encode()
        streams = [
            key[: -len(b":meta")]
            for key, meta in zip(metas, pipe.execute(), strict=True)
            if meta is not None and wanted in meta.replace(b" ", b"")
        ][:SAMPLE]
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.memory_usage(stream, samples=0)
            pipe.memory_usage(stream + b":fence", samples=0)
            pipe.memory_usage(stream + b":meta", samples=0)
            pipe.xrange(stream, count=1)
            pipe.xrevrange(stream, count=1)
        replies = pipe.execute()
    finally:
        client.close()
    size = frames = measured = 0
    for at in range(0, len(replies), 5):
        stream_bytes, fence, meta, first, last = replies[at : at + 5]
        if not stream_bytes or not first or not last:
            continue
        held, ended = _frames_held(first, last)
        if not ended:
            continue
        measured += 1
        frames += held
        size += stream_bytes + (fence or 0) + (meta or 0)
    return {
        "streams_measured": measured,
        "frames_per_stream": round(frames / measured, 1) if measured else None,
        "bytes_per_stream": round(size / measured) if measured else None,
        "bytes_per_1k_frames": round(size * 1000 / frames) if frames else None,
    }


def cost(
    url: str, before: dict[str, Any], after: dict[str, Any], cell: dict[str, Any]
) -> dict[str, Any]:
    """The request log's Redis figures for one cell (see the module)."""
    calls = {
        name: count - before["calls"].get(name, 0)
        for name, count in after["calls"].items()
        if count - before["calls"].get(name, 0) > 0 and name not in ("info", "scan")
    }
    requests = cell.get("requests_total") or 0
    chunks = cell.get("chunks_total") or 0
    trips = calls.get("evalsha", 0)
    commands = sum(calls.values())
    received = after["net_input_bytes"] - before["net_input_bytes"]
    cpu_ms = (after["cpu_s"] - before["cpu_s"]) * 1000
    return {
        "redis_cpu_ms_per_1k_chunks": round(cpu_ms * 1000 / chunks, 2) if chunks else None,
        "round_trips": trips,
        "round_trips_per_request": round(trips / requests, 3) if requests else None,
        "round_trips_per_1k_chunks": round(trips * 1000 / chunks, 2) if chunks else None,
        "commands": calls,
        "commands_per_request": round(commands / requests, 2) if requests else None,
        "commands_per_1k_chunks": round(commands * 1000 / chunks, 1) if chunks else None,
        "bytes_in_per_1k_chunks": round(received * 1000 / chunks) if chunks else None,
        "used_memory_delta_mb": round((after["used_memory"] - before["used_memory"]) / 2**20, 2),
        "memory": stream_memory(url, cell["workload"]),
    }
