"""One suite, two request logs: in memory and on a real redis-server (same semantics)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from resume.log import LoggedFrame, MemoryRequestLog, RequestLog, ResumeGap
from resume.redis_log import RedisRequestLog
from tests.resume_redis import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(params=["memory", "redis"])
async def request_log(request: pytest.FixtureRequest) -> AsyncIterator[RequestLog]:
    store: RequestLog
    if request.param == "memory":
        store = MemoryRequestLog(max_frames=32, retention=60)
    else:
        url = request.getfixturevalue("redis_url")
        redis = Redis.from_url(url)
        await redis.flushall()
        store = RedisRequestLog(
            redis, max_frames=32, retention=60, running_ttl=60, flush_interval=0.005
        )
    yield store
    await store.aclose()


def text(seq: int, terminal: bool = False) -> LoggedFrame:
    return LoggedFrame(seq, f'{{"seq":{seq}}}'.encode(), True, terminal)


async def read_all(store: RequestLog, key: str, rid: str, after: int) -> list[LoggedFrame]:
    tail = await store.open(key, rid, after)
    assert tail is not None
    return [frame async for frame in tail]


async def test_backlog_then_live_frames_up_to_the_terminal_one(request_log: RequestLog) -> None:
    for seq in (1, 2, 3):
        request_log.append("k", "r", text(seq))
    tail = await request_log.open("k", "r", 1)
    assert tail is not None
    backlog = [await anext(tail), await anext(tail)]
    assert [f.seq for f in backlog] == [2, 3]
    live = asyncio.ensure_future(anext(tail))  # waits for a frame not written yet
    request_log.append("k", "r", LoggedFrame(4, b"\x01r", False, False))
    assert await asyncio.wait_for(live, 10) == LoggedFrame(4, b"\x01r", False, False)
    request_log.append("k", "r", text(5, terminal=True))
    rest = [frame async for frame in tail]
    assert [f.seq for f in rest] == [5]
    assert rest[0].terminal and rest[0].payload == b'{"seq":5}'


async def test_another_key_or_an_unknown_id_sees_nothing(request_log: RequestLog) -> None:
    request_log.append("k", "r", text(1, terminal=True))
    assert await request_log.open("other", "r", 0) is None
    assert await request_log.open("k", "nope", 0) is None
    assert [f.seq for f in await read_all(request_log, "k", "r", 0)] == [1]


async def test_seq_one_starts_the_request_again(request_log: RequestLog) -> None:
    request_log.append("k", "r", text(1))
    request_log.append("k", "r", text(2, terminal=True))
    request_log.append("k", "r", LoggedFrame(1, b"again", True, True))
    frames = await read_all(request_log, "k", "r", 0)
    assert [(f.seq, f.payload) for f in frames] == [(1, b"again")]


async def test_frames_past_the_bound_are_gone_and_a_resume_before_them_is_a_gap(
    request_log: RequestLog,
) -> None:
    for seq in range(1, 201):
        request_log.append("k", "r", text(seq, terminal=seq == 200))
    assert [f.seq for f in await read_all(request_log, "k", "r", 195)] == [196, 197, 198, 199, 200]
    tail = await request_log.open("k", "r", 0)
    assert tail is not None
    with pytest.raises(ResumeGap):
        async for _ in tail:
            pass


async def test_a_dropped_request_is_forgotten(request_log: RequestLog) -> None:
    request_log.append("k", "r", text(1))
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


async def test_redis_appends_share_round_trips(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = RedisRequestLog(redis, max_frames=1000, retention=60, running_ttl=60, flush_interval=1)
    for rid in ("a", "b", "c"):
        for seq in range(1, 51):
            store.append("k", rid, text(seq, terminal=seq == 50))
    await store.flush()
    assert store.round_trips == 1 and store.frames_written == 150
    assert 0 < await redis.pttl(store.stream("k", "a")) <= 60_000
    await store.aclose()
