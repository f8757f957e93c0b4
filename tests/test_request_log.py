"""One suite, two request logs: in memory and on a real redis-server (same semantics)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from resume.log import (
    FrameSink,
    LoggedFrame,
    MemoryRequestLog,
    OwnerGone,
    RequestLog,
    ResumeGap,
)
from resume.redis_log import RedisRequestLog
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
async def request_log(request: pytest.FixtureRequest) -> AsyncIterator[RequestLog]:
    store: RequestLog
    if request.param == "memory":
        store = MemoryRequestLog(max_frames=32, retention=60, max_bytes=1 << 20)
    else:
        url = request.getfixturevalue("redis_url")
        redis = Redis.from_url(url)
        await redis.flushall()
        store = RedisRequestLog(
            redis, max_frames=32, retention=60, running_ttl=60, flush_interval=0.005
        )
    yield store
    await store.aclose()


def payload(seq: int) -> bytes:
    return f'{{"seq":{seq}}}'.encode()


def write(sink: FrameSink, first: int, last: int, terminal_at: int | None = None) -> None:
    for seq in range(first, last + 1):
        sink.append(payload(seq), True, seq == terminal_at)


async def read_all(store: RequestLog, key: str, rid: str, after: int) -> list[LoggedFrame]:
    tail = await store.open(key, rid, after)
    assert tail is not None
    return [frame async for frame in tail]


async def test_backlog_then_live_frames_up_to_the_terminal_one(request_log: RequestLog) -> None:
    sink = request_log.begin("k", "r")
    write(sink, 1, 3)
    tail = await request_log.open("k", "r", 1)
    assert tail is not None
    backlog = [await anext(tail), await anext(tail)]
    assert backlog == [
        LoggedFrame(2, payload(2), True, False),
        LoggedFrame(3, payload(3), True, False),
    ]
    live = asyncio.ensure_future(anext(tail))  # waits for a frame not written yet
    sink.append(b"\x01r", False, False)
    assert await asyncio.wait_for(live, 10) == LoggedFrame(4, b"\x01r", False, False)
    sink.append(payload(5), True, True)
    assert [frame async for frame in tail] == [LoggedFrame(5, payload(5), True, True)]


async def test_text_and_binary_frames_written_together_resume_after_any_of_them(
    request_log: RequestLog,
) -> None:
    frames = [
        LoggedFrame(1, payload(1), True, False),
        LoggedFrame(2, b"\x00\xffaudio", False, False),
        LoggedFrame(3, b"", False, False),
        LoggedFrame(4, payload(4), True, False),
        LoggedFrame(5, payload(5), True, True),
    ]
    sink = request_log.begin("k", "r")
    for frame in frames:  # one flush: a Redis log writes them as one entry
        sink.append(frame.payload, frame.is_text, frame.terminal)
    for after in range(len(frames)):
        assert await read_all(request_log, "k", "r", after) == frames[after:]


async def test_another_key_or_an_unknown_id_sees_nothing(request_log: RequestLog) -> None:
    write(request_log.begin("k", "r"), 1, 1, terminal_at=1)
    assert await request_log.open("other", "r", 0) is None
    assert await request_log.open("k", "nope", 0) is None
    assert [f.seq for f in await read_all(request_log, "k", "r", 0)] == [1]


async def test_a_new_run_of_the_id_replaces_the_record(request_log: RequestLog) -> None:
    write(request_log.begin("k", "r"), 1, 2, terminal_at=2)
    request_log.begin("k", "r").append(b"again", True, True)
    frames = await read_all(request_log, "k", "r", 0)
    assert [(f.seq, f.payload) for f in frames] == [(1, b"again")]


async def test_frames_past_the_bound_are_gone_and_a_resume_before_them_is_a_gap(
    request_log: RequestLog,
) -> None:
    write(request_log.begin("k", "r"), 1, 200, terminal_at=200)
    assert [f.seq for f in await read_all(request_log, "k", "r", 195)] == [196, 197, 198, 199, 200]
    tail = await request_log.open("k", "r", 0)
    assert tail is not None
    with pytest.raises(ResumeGap):
        async for _ in tail:
            pass


async def test_a_dropped_request_is_forgotten(request_log: RequestLog) -> None:
    write(request_log.begin("k", "r"), 1, 1)
    request_log.drop("k", "r")
    assert await request_log.open("k", "r", 0) is None


async def test_later_messages_reach_an_owner_in_this_process(request_log: RequestLog) -> None:
    got: list[object] = []
    request_log.own("k", "r", got.append)
    assert request_log.forward("k", "r", "cancel")  # type: ignore[arg-type]
    assert not request_log.forward("other", "r", "cancel")  # type: ignore[arg-type]
    request_log.own("k", "r", None)
    assert not request_log.forward("k", "r", "cancel")  # type: ignore[arg-type]
    assert got == ["cancel"]


async def test_memory_keeps_finished_requests_within_max_bytes() -> None:
    store = MemoryRequestLog(max_frames=100, retention=60, max_bytes=10 * len(payload(10)))
    for rid in ("a", "b", "c"):
        write(store.begin("k", rid), 1, 10, terminal_at=10)
    running = store.begin("k", "d")
    write(running, 1, 50)
    # the two oldest finished records went to make room; a running one is never evicted
    assert await store.open("k", "a", 0) is None and await store.open("k", "b", 0) is None
    assert [f.seq for f in await read_all(store, "k", "c", 8)] == [9, 10]
    tail = await store.open("k", "d", 49)
    assert tail is not None and (await anext(tail)).seq == 50
    await store.aclose()


async def test_redis_appends_share_round_trips(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = RedisRequestLog(redis, max_frames=1000, retention=60, running_ttl=60, flush_interval=1)
    for rid in ("a", "b", "c"):
        write(store.begin("k", rid), 1, 50, terminal_at=50)
    await store.flush()
    assert store.round_trips == 1 and store.frames_written == 150
    assert 0 < await redis.pttl(store.stream("k", "a")) <= 60_000
    await store.aclose()


async def test_a_dead_owners_request_is_taken_over_by_exactly_one_reader(redis_url: str) -> None:
    def new_log() -> RedisRequestLog:
        return RedisRequestLog(
            Redis.from_url(redis_url),
            max_frames=1000,
            retention=60,
            running_ttl=60,
            flush_interval=0.005,
            lease=0.3,
        )

    owner, b, c = new_log(), new_log(), new_log()
    sink = owner.begin("k", "t", b'{"endpoint": "chatStream"}')
    write(sink, 1, 5)
    await owner.flush()
    # the owner dies (kill -9): nothing renews its lease any more
    assert owner._renewer is not None
    owner._renewer.cancel()

    async def read_until_gone(store: RedisRequestLog) -> int:
        tail = await store.open("k", "t", 0)
        assert tail is not None
        with pytest.raises(OwnerGone) as gone:
            async for _ in tail:
                pass
        return gone.value.last_seq

    assert await asyncio.gather(read_until_gone(b), read_until_gone(c)) == [5, 5]
    won = await asyncio.gather(b.take_over("k", "t"), c.take_over("k", "t"))
    winners = [t for t in won if t is not None]
    assert len(winners) == 1  # exactly one instance runs the request from here
    takeover = winners[0]
    assert takeover.seq == 5 and takeover.meta == b'{"endpoint": "chatStream"}'
    assert [f.payload for f in takeover.frames] == [payload(n) for n in range(1, 6)]
    winner, loser = (b, c) if won[0] is not None else (c, b)

    # the old owner comes back and writes: fenced out, nothing of it is recorded
    write(sink, 6, 6)
    await owner.flush()
    assert sink.fenced
    resumed = winner.resume_sink("k", "t", takeover)
    resumed.append(b"continued", True, False)
    resumed.append(b"end", True, True)
    await winner.flush()
    frames = await read_all(loser, "k", "t", 5)
    assert [(f.seq, f.payload, f.terminal) for f in frames] == [
        (6, b"continued", False),
        (7, b"end", True),
    ]
    assert await loser.take_over("k", "t") is None  # finished: nothing to take over
    for store in (owner, b, c):
        await store.aclose()


async def test_a_fresh_redis_log_answers_many_takeovers_at_once(redis_url: str) -> None:
    # its scripts are loaded by the first callers, all at the same time
    store = RedisRequestLog(
        Redis.from_url(redis_url), max_frames=10, retention=60, running_ttl=60, flush_interval=1
    )
    results = await asyncio.gather(*(store.take_over("k", f"none{i}") for i in range(20)))
    assert results == [None] * 20
    await store.aclose()


async def test_redis_keeps_a_bounded_stream_over_many_flushes(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = RedisRequestLog(redis, max_frames=32, retention=60, running_ttl=60, flush_interval=1)
    sink = store.begin("k", "long")
    for seq in range(1, 1001):  # one frame per flush, as a paced stream's
        sink.append(payload(seq), True, seq == 1000)
        await store.flush()
    # MINID ~ trims whole nodes (100 entries): the newest frames are all there, and
    # the stream holds a few hundred entries at most, not a thousand
    assert await redis.xlen(store.stream("k", "long")) <= 32 + 200
    assert [f.seq for f in await read_all(store, "k", "long", 990)] == list(range(991, 1001))
    await store.aclose()


async def test_redis_renews_a_quiet_running_request_past_its_running_ttl(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = RedisRequestLog(
        redis, max_frames=100, retention=60, running_ttl=1.0, flush_interval=0.005, lease=1.5
    )
    sink = store.begin("k", "quiet")
    write(sink, 1, 2)
    await store.flush()
    # no frame for 2.5 running TTLs: the renewer (every lease/3) kept the TTLs and lease
    await asyncio.sleep(2.5)
    write(sink, 3, 3, terminal_at=3)
    assert [f.seq for f in await read_all(store, "k", "quiet", 0)] == [1, 2, 3]
    assert not sink.fenced
    assert await redis.pttl(store.stream("k", "quiet")) > 10_000  # the retention TTL now
    await store.aclose()


async def test_redis_reads_a_stream_written_one_entry_per_frame(redis_url: str) -> None:
    """Streams of earlier versions (an entry per frame, fields k and p) resume too,
    as during a rolling upgrade."""
    redis = Redis.from_url(redis_url)
    store = RedisRequestLog(redis, max_frames=100, retention=60, running_ttl=60, flush_interval=1)
    stream = store.stream("k", "old")
    for seq, kind in ((1, b"t"), (2, b"b"), (3, b"T")):
        await redis.xadd(stream, {"p": payload(seq), "k": kind}, id=f"0-{seq}")
    assert await read_all(store, "k", "old", 1) == [
        LoggedFrame(2, payload(2), False, False),
        LoggedFrame(3, payload(3), True, True),
    ]
    await store.aclose()


async def test_redis_records_again_after_a_restart(redis_server: RedisServer) -> None:
    """Writes while Redis is down are dropped; after its restart (scripts lost) the
    log reconnects, loads its scripts again, and a run whose first frames were lost
    starts its stream with the next ones (a resume before them is a gap)."""
    redis = Redis.from_url(redis_server.url)
    store = RedisRequestLog(redis, max_frames=100, retention=60, running_ttl=60, flush_interval=1)
    before = store.begin("k", "before")
    write(before, 1, 2)
    await store.flush()
    redis_server.stop()
    during = store.begin("k", "during")
    write(during, 1, 2)
    write(before, 3, 3)
    await store.flush()  # fails: logged, dropped, the requests go on
    redis_server.start()  # empty, no scripts
    write(during, 3, 4, terminal_at=4)
    after = store.begin("k", "after")
    write(after, 1, 2, terminal_at=2)
    await store.flush()
    assert [f.seq for f in await read_all(store, "k", "after", 0)] == [1, 2]
    assert [f.seq for f in await read_all(store, "k", "during", 2)] == [3, 4]
    tail = await store.open("k", "during", 0)
    assert tail is not None
    with pytest.raises(ResumeGap):
        async for _ in tail:
            pass
    await store.aclose()


async def test_noted_messages_reach_the_takeover_in_order_and_a_fenced_owner_adds_none(
    redis_url: str,
) -> None:
    def new_log() -> RedisRequestLog:
        return RedisRequestLog(
            Redis.from_url(redis_url),
            max_frames=1000,
            retention=60,
            running_ttl=60,
            flush_interval=0.005,
            lease=0.3,
        )

    owner, other = new_log(), new_log()
    sink = owner.begin("k", "n", b'{"endpoint": "speak"}')
    sink.note(b'{"text":"early"}')  # noted before the first frame: after it in Redis
    write(sink, 1, 2)
    sink.note(b'{"text":"one"}')
    sink.note(b'{"text":"two"}')
    await owner.flush()
    assert owner._renewer is not None
    owner._renewer.cancel()  # the owner dies
    tail = await other.open("k", "n", 0)
    assert tail is not None
    with pytest.raises(OwnerGone):
        async for _ in tail:
            pass
    takeover = await other.take_over("k", "n")
    assert takeover is not None
    assert takeover.inputs == (b'{"text":"early"}', b'{"text":"one"}', b'{"text":"two"}')
    # the old owner comes back: fenced out, its notes are not recorded
    sink.note(b'{"text":"stale"}')
    write(sink, 3, 3)
    await owner.flush()
    assert sink.fenced
    resumed = other.resume_sink("k", "n", takeover)
    resumed.note(b'{"text":"three"}')
    await other.flush()
    inputs = await other.redis.lrange(other.stream("k", "n") + ":in", 0, -1)
    assert inputs[-1] == b'{"text":"three"}' and b'{"text":"stale"}' not in inputs
    # a new run of the id starts with no noted messages
    write(other.begin("k", "n"), 1, 1)
    await other.flush()
    assert await other.redis.exists(other.stream("k", "n") + ":in") == 0
    for store in (owner, other):
        await store.aclose()
