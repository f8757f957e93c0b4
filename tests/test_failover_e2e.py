"""Routing and failover end to end: real sockets, real adapters, faulty fake upstreams.

Every fault the fake OpenAI server can inject is sent through Sluice's chatStream
websocket and HTTP chat with a healthy model behind the faulty one, with only
faulty models, and under concurrent load; routing strategies and health recovery
are checked by which fake actually served each request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from config.models import ClientConfig, RetryConfig
from fakes.openai_server import (
    FAULT_HEADER,
    FakeOpenAI,
    FakeOpenAIScript,
    Fault,
    make_fake_openai_app,
)
from routing.backoff import retry_delays
from tests.conftest import (
    FAST_RETRY,
    MakeClient,
    collect,
    is_terminal,
    make_config,
    openai_model,
    receive_json,
    text_of,
)

STREAM_URL = "/v1/language/r/chatStream"
CHAT_URL = "/v1/language/r/chat"

FAULT_KINDS: tuple[Fault, ...] = (
    "refuse",
    "http_500",
    "http_429",
    "http_401",
    "stall_before_first",
    "stall_mid_stream",
    "truncated",
    "malformed",
    "empty",
)
MID_STREAM: frozenset[str] = frozenset({"stall_mid_stream", "truncated", "malformed"})
"""Faults that strike after the faulty model already sent a chunk."""

# Tight deadlines for the faulty models so stalls cost a few hundred ms; the HTTP
# chat path waits `timeout` for the whole (non-streamed) answer.
FAULTY_CLIENT = {"first_chunk_timeout": "250ms", "idle_timeout": "250ms", "timeout": "500ms"}
STEADY_CLIENT = {"first_chunk_timeout": "5s", "idle_timeout": "5s", "timeout": "10s"}

HEALTHY_TEXT = "Backup answer"  # what the `fake_b` fixture says
FAULTY_CHUNKS = ["partial", " text", " lost"]

Frames = dict[str | None, list[dict[str, Any]]]


def chat(request_id: str, text: str = "hi") -> str:
    """A chatStream request frame."""
    return json.dumps({"request_id": request_id, "message": {"role": "user", "content": text}})


async def post_chat(client: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    """One HTTP chat request -> (status, JSON body)."""
    resp = await client.post(CHAT_URL, json={"message": {"role": "user", "content": "hi"}})
    body: dict[str, Any] = await resp.json()
    return resp.status, body


async def health_of(client: TestClient[Any, Any]) -> dict[str, str]:
    """Model id -> health state, as `GET /v1/language/` reports it for router `r`."""
    resp = await client.get("/v1/language/")
    assert resp.status == 200
    (router,) = (await resp.json())["routers"]
    return {model["id"]: model["health"] for model in router["models"]}


async def wait_for_health(
    client: TestClient[Any, Any], model_id: str, state: str, within: float = 2.0
) -> None:
    """Poll `GET /v1/language/` until `model_id` is in `state` (cooldowns are real time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (current := (await health_of(client))[model_id]) != state:
        assert loop.time() < deadline, f"{model_id} stayed {current!r}, expected {state!r}"
        await asyncio.sleep(0.02)


async def send_all(ws: ClientWebSocketResponse, request_ids: Sequence[str]) -> None:
    """Send one chat request per id, back to back, on one socket."""
    for request_id in request_ids:
        await ws.send_str(chat(request_id))


def served_by(frames: list[dict[str, Any]]) -> str:
    """The model whose answer ended the request (its terminal chunk)."""
    last = frames[-1]
    assert last["type"] == "chunk", f"request did not end with an answer: {last}"
    model_id: str = last["chunk"]["model_id"]
    return model_id


def errors_named(frames: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The error frames of one request with the given error name."""
    return [f for f in frames if f["type"] == "error" and f["error"]["name"] == name]


def assert_answered(frames: list[dict[str, Any]], model_id: str, text: str) -> None:
    """Exactly one terminal frame, last, a complete answer from `model_id` with `text`."""
    assert sum(1 for f in frames if is_terminal(f)) == 1
    assert is_terminal(frames[-1])
    assert frames[-1]["type"] == "chunk", frames[-1]
    assert frames[-1]["chunk"]["finish_reason"] == "complete"
    assert served_by(frames) == model_id
    assert text_of(frames) == text


def assert_failed_over(frames: list[dict[str, Any]], fault: str) -> None:
    """The faulty model's failure is invisible, or (mid-stream) one model_unavailable."""
    assert_answered(frames, "healthy", HEALTHY_TEXT)
    resets = errors_named(frames, "model_unavailable")
    assert len([f for f in frames if f["type"] == "error"]) == len(resets)
    if fault not in MID_STREAM:
        assert resets == [], f"{fault} before the first chunk must fail over silently"
        assert {f["chunk"]["model_id"] for f in frames} == {"healthy"}
        return
    (reset,) = resets
    assert reset["error"]["model_id"] == "faulty"
    assert "finish_reason" not in reset["error"]
    at = frames.index(reset)
    before, after = frames[:at], frames[at + 1 :]
    assert before and {f["chunk"]["model_id"] for f in before} == {"faulty"}
    assert "".join(f["chunk"]["model_response"]["message"]["content"] for f in before) == (
        "partial"
    )
    assert {f["chunk"]["model_id"] for f in after} == {"healthy"}


async def collect_timed(
    ws: ClientWebSocketResponse, count: int, within: float
) -> tuple[Frames, dict[str, float]]:
    """Like `collect`, plus the loop time at which each request's terminal frame arrived."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    frames: Frames = {}
    ended: dict[str, float] = {}
    while len(ended) < count:
        frame = await receive_json(ws, max(0.01, deadline - loop.time()))
        request_id = frame["request_id"]
        assert request_id not in ended, f"frame after the terminal frame: {frame}"
        frames.setdefault(request_id, []).append(frame)
        if request_id is not None and is_terminal(frame):
            ended[request_id] = loop.time()
    return frames, ended


@asynccontextmanager
async def run_cycling_fake(
    faults: Sequence[Fault], script: FakeOpenAIScript, *, delay: float = 0.0
) -> AsyncIterator[FakeOpenAI]:
    """A fake whose n-th request gets `faults[n % len(faults)]` (as its x-fake-fault).

    `delay` seconds pass before each request is handled (also for non-streamed
    answers, which ignore `script.delay`). Every response says `Connection:
    close`, so no pooled upstream connection (and no server task behind it)
    outlives the test's traffic; the listen backlog takes a burst of connects.
    """
    app = make_fake_openai_app(script)
    counter = itertools.count()

    @web.middleware
    async def cycle_faults(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        headers = CIMultiDict(request.headers)
        headers[FAULT_HEADER] = faults[next(counter) % len(faults)]
        if delay:
            await asyncio.sleep(delay)
        return await handler(request.clone(headers=headers))

    async def close_connection(_: web.Request, response: web.StreamResponse) -> None:
        response.force_close()

    app.middlewares.append(cycle_faults)
    app.on_response_prepare.append(close_connection)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        root = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield FakeOpenAI(url=f"{root}/v1", root=root, app=app)
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------------------
# one faulty model in front of a healthy one


WAVE_WS = 4
WAVE_HTTP = 2
WAVE = WAVE_WS + WAVE_HTTP


@pytest.mark.parametrize("fault", FAULT_KINDS)
async def test_a_faulty_model_fails_over_to_the_healthy_one(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI, fault: Fault
) -> None:
    fake_a.script.chunks = list(FAULTY_CHUNKS)
    fake_a.script.fault = fault
    fake_a.script.retry_after = "30"
    # The error budget equals the first wave, so exactly that wave is charged to
    # the faulty model (each request plans before its own failure) and the last
    # charge trips it.
    client = await sluice(
        make_config(
            openai_model("faulty", fake_a, client=FAULTY_CLIENT, error_budget=f"{WAVE}/m"),
            openai_model("healthy", fake_b),
            mid_stream="restart",
        )
    )
    first_ids = [f"w1-{i}" for i in range(WAVE_WS)]
    async with client.ws_connect(STREAM_URL) as ws:
        await send_all(ws, first_ids)
        frames, *answers = await asyncio.gather(
            collect(ws, WAVE_WS), *(post_chat(client) for _ in range(WAVE_HTTP))
        )
        assert set(frames) == set(first_ids)
        for request_id in first_ids:
            assert_failed_over(frames[request_id], fault)
        for status, body in answers:
            assert status == 200, body
            assert body["model_id"] == "healthy"
            assert body["model_response"]["message"]["content"] == HEALTHY_TEXT
            assert body["model_response"]["finish_reason"] == "complete"

        tried = fake_a.stats.requests
        health = await health_of(client)
        assert health["healthy"] == "healthy"
        if fault == "http_401":
            assert health["faulty"] == "disabled"
            assert 1 <= tried <= WAVE
        elif fault == "http_429":
            assert health["faulty"] == "unhealthy"  # rate limited for Retry-After (30 s)
            assert 1 <= tried <= WAVE
        else:
            assert health["faulty"] == "unhealthy"  # the error budget ran out
            assert tried == WAVE

        # the unhealthy / disabled model is skipped: it sees no more requests
        second_ids = ["w2-0", "w2-1"]
        await send_all(ws, second_ids)
        frames, (status, body) = await asyncio.gather(collect(ws, 2), post_chat(client))
        for request_id in second_ids:
            assert_answered(frames[request_id], "healthy", HEALTHY_TEXT)
            assert not errors_named(frames[request_id], "model_unavailable")
        assert status == 200 and body["model_id"] == "healthy"
    assert fake_a.stats.requests == tried
    assert fake_b.stats.requests == WAVE + 3
    await fake_a.stats.wait_idle()
    await fake_b.stats.wait_idle()


# --------------------------------------------------------------------------------------
# nothing healthy: all_models_unavailable within the configured deadlines


def all_faulty_bound(client: dict[str, str], retry: dict[str, Any], models: int) -> float:
    """Seconds one request may take at most when every model fails.

    Each attempt ends by its overall deadline (`client.timeout`) at the latest;
    every pass tries each model once; passes are separated by the retry delays
    (taken at their largest jitter). One second of slack covers scheduling and
    loopback I/O. A bound on hanging, not a performance figure.
    """
    timeout = ClientConfig.model_validate(client).timeout
    retry_config = RetryConfig.model_validate(retry)
    passes = retry_config.max_retries + 1
    widest = retry_config.model_copy(
        update={"min_delay": retry_config.min_delay * (1 + retry_config.jitter), "jitter": 0.0}
    )
    delays = sum(retry_delays(widest, random.Random(0)))
    return passes * models * timeout + delays + 1.0


@pytest.mark.parametrize("fault", FAULT_KINDS)
async def test_only_faulty_models_end_with_all_models_unavailable_in_time(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI, fault: Fault
) -> None:
    for fake in (fake_a, fake_b):
        fake.script.chunks = list(FAULTY_CHUNKS)
        fake.script.fault = fault
    config = make_config(
        openai_model("a", fake_a, client=FAULTY_CLIENT, error_budget="100/s"),
        openai_model("b", fake_b, client=FAULTY_CLIENT, error_budget="100/s"),
        mid_stream="restart",
    )
    bound = all_faulty_bound(FAULTY_CLIENT, FAST_RETRY, models=2)
    client = await sluice(config)
    loop = asyncio.get_running_loop()
    request_ids = ["x1", "x2"]
    async with client.ws_connect(STREAM_URL) as ws:
        started = loop.time()
        await send_all(ws, request_ids)
        (frames, ended), (status, body) = await asyncio.gather(
            collect_timed(ws, len(request_ids), within=bound + 1), post_chat(client)
        )
        http_elapsed = loop.time() - started
    assert http_elapsed <= bound
    assert status == 503, body
    assert body["name"] == "all_models_unavailable"
    for request_id in request_ids:
        got = frames[request_id]
        assert ended[request_id] - started <= bound
        terminal = got[-1]
        assert sum(1 for f in got if is_terminal(f)) == 1
        assert terminal["type"] == "error", terminal
        assert terminal["error"]["name"] == "all_models_unavailable"
        assert terminal["error"]["finish_reason"] == "error"
        assert terminal["error"]["id"] == request_id
        message = terminal["error"]["message"]
        assert "router 'r'" in message
        assert "sk-test-SECRET" not in json.dumps(got)
        resets = errors_named(got, "model_unavailable")
        if fault in MID_STREAM:
            # each failed attempt had sent a chunk: one reset per attempt, every pass
            assert len(resets) == 2 * (RetryConfig.model_validate(FAST_RETRY).max_retries + 1)
            assert {r["error"]["model_id"] for r in resets} == {"a", "b"}
        else:
            assert resets == []
        # for 429 / 401 the retry pass finds both models out (cooling down,
        # disabled): the error still names the failures of the pass that tried them
        assert "a: " in message and "b: " in message, message
    states = await health_of(client)
    if fault == "http_401":
        assert states == {"a": "disabled", "b": "disabled"}
    elif fault == "http_429":
        assert states == {"a": "unhealthy", "b": "unhealthy"}


CAUSES: dict[str, str] = {
    "refuse": "a: transient",
    "http_500": "a: transient (HTTP 500)",
    "http_429": "a: rate_limited (HTTP 429)",
    "http_401": "a: auth (HTTP 401)",
    "stall_before_first": "a: timeout: no first chunk within 0.25s",
    "stall_mid_stream": "a: timeout: no chunk for 0.25s",
    "truncated": "a: protocol",
    "malformed": "a: protocol",
    "empty": "a: empty_output",
}


@pytest.mark.parametrize("fault", FAULT_KINDS)
async def test_all_models_unavailable_names_the_model_and_cause(
    sluice: MakeClient, fake_a: FakeOpenAI, fault: Fault
) -> None:
    fake_a.script.chunks = list(FAULTY_CHUNKS)
    fake_a.script.fault = fault
    fake_a.script.retry_after = "30"
    # one retry pass (FAST_RETRY): after a 429 or 401 it finds the model out, and
    # the terminal error must still name the cause the first pass saw
    # only the stall faults need the short deadlines: on a loaded machine a 250 ms
    # first-chunk deadline could fire on the retry pass of another fault and name
    # "timeout" as the cause the message reports
    deadlines = FAULTY_CLIENT if fault.startswith("stall") else STEADY_CLIENT
    client = await sluice(
        make_config(openai_model("a", fake_a, client=deadlines, error_budget="100/s"))
    )
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("n1"))
        frames = await collect(ws, 1)
    message = frames["n1"][-1]["error"]["message"]
    assert message.startswith("all models of router 'r' failed: "), message
    assert CAUSES[fault] in message, message
    assert "sk-test-SECRET" not in message


# --------------------------------------------------------------------------------------
# the client's own bad request


async def test_bad_request_ends_at_once_and_is_not_charged(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_400"
    # a budget of one error: any charge would take the model out
    client = await sluice(
        make_config(openai_model("a", fake_a, error_budget="1/m"), openai_model("b", fake_b))
    )
    request_ids = ["bad-1", "bad-2", "bad-3"]
    async with client.ws_connect(STREAM_URL) as ws:
        await send_all(ws, request_ids)
        frames, (status, body) = await asyncio.gather(
            collect(ws, len(request_ids)), post_chat(client)
        )
        for request_id in request_ids:
            (terminal,) = frames[request_id]
            assert terminal["type"] == "error"
            assert terminal["error"]["name"] == "bad_request"
            assert terminal["error"]["finish_reason"] == "error"
            assert "HTTP 400" in terminal["error"]["message"]
            assert "temperature" in terminal["error"]["message"]  # the vendor's reason
        assert status == 400 and body["name"] == "bad_request"
        assert fake_a.stats.requests == len(request_ids) + 1
        assert fake_b.stats.requests == 0  # no other model was tried
        assert await health_of(client) == {"a": "healthy", "b": "healthy"}
        fake_a.script.fault = "none"
        await ws.send_str(chat("good"))
        frames = await collect(ws, 1)
        assert_answered(frames["good"], "a", "Hello from fake")


# --------------------------------------------------------------------------------------
# strategies


async def answer_in_turn(ws: ClientWebSocketResponse, count: int, prefix: str) -> list[str]:
    """Send `count` requests one after another; the model that served each, in order."""
    served: list[str] = []
    for i in range(count):
        request_id = f"{prefix}-{i}"
        await ws.send_str(chat(request_id))
        frames = await collect(ws, 1)
        assert sum(1 for f in frames[request_id] if is_terminal(f)) == 1
        served.append(served_by(frames[request_id]))
    return served


async def test_round_robin_alternates(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    client = await sluice(
        make_config(openai_model("a", fake_a), openai_model("b", fake_b), strategy="round_robin")
    )
    async with client.ws_connect(STREAM_URL) as ws:
        served = await answer_in_turn(ws, 4, "rr")
    assert served == ["a", "b", "a", "b"]
    assert (fake_a.stats.requests, fake_b.stats.requests) == (2, 2)


async def test_weighted_round_robin_splits_by_weight(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    client = await sluice(
        make_config(
            openai_model("a", fake_a, weight=3),
            openai_model("b", fake_b, weight=1),
            strategy="weighted_round_robin",
        )
    )
    request_ids = [f"w-{i}" for i in range(8)]
    async with client.ws_connect(STREAM_URL) as ws:
        await send_all(ws, request_ids)
        frames = await collect(ws, len(request_ids))
    served = [served_by(frames[request_id]) for request_id in request_ids]
    assert served.count("a") == 6 and served.count("b") == 2
    assert (fake_a.stats.requests, fake_b.stats.requests) == (6, 2)


async def test_least_latency_learns_from_chat_stream(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.delay = 0.03  # slow: 30 ms before every chunk
    latency = {"warmup_samples": 2}
    client = await sluice(
        make_config(
            openai_model("a", fake_a, latency=latency),
            openai_model("b", fake_b, latency=latency),
            strategy="least_latency",
        )
    )
    async with client.ws_connect(STREAM_URL) as ws:
        warmup = await answer_in_turn(ws, 4, "warm")
        warmed = await answer_in_turn(ws, 4, "hot")
    assert sorted(warmup) == ["a", "a", "b", "b"]  # cold models take turns
    assert warmed == ["b"] * 4
    assert fake_a.stats.requests == 2


async def test_least_latency_learns_from_http_chat(sluice: MakeClient) -> None:
    # HTTP chat: the fake's non-streamed answer ignores `delay`, so the slow fake
    # waits in a middleware before answering.
    latency = {"warmup_samples": 2}
    async with (
        run_cycling_fake(["none"], FakeOpenAIScript(), delay=0.05) as slow,
        run_cycling_fake(["none"], FakeOpenAIScript()) as fast,
    ):
        client = await sluice(
            make_config(
                openai_model("slow", slow, latency=latency),
                openai_model("fast", fast, latency=latency),
                strategy="least_latency",
            )
        )
        served: list[str] = []
        for _ in range(8):
            status, body = await post_chat(client)
            assert status == 200, body
            served.append(body["model_id"])
    assert sorted(served[:4]) == ["fast", "fast", "slow", "slow"]  # cold models take turns
    assert served[4:] == ["fast"] * 4
    assert slow.stats.requests == 2


async def test_priority_returns_to_a_recovered_model_after_its_cooldown(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_500"
    client = await sluice(
        make_config(
            openai_model("a", fake_a, error_budget="1/s", health={"cooldown": "300ms"}),
            openai_model("b", fake_b),
        )
    )
    async with client.ws_connect(STREAM_URL) as ws:
        # one failure empties a budget of one: a cools down, b answers
        assert await answer_in_turn(ws, 1, "p1") == ["b"]
        assert fake_a.stats.requests == 1
        assert (await health_of(client))["a"] == "unhealthy"
        assert await answer_in_turn(ws, 1, "p2") == ["b"]
        assert fake_a.stats.requests == 1  # skipped while cooling down

        # after the cooldown one probe goes to a; it fails: another cooldown
        await wait_for_health(client, "a", "half_open")
        assert await answer_in_turn(ws, 1, "p3") == ["b"]
        assert fake_a.stats.requests == 2
        assert (await health_of(client))["a"] == "unhealthy"

        # a is fixed: the next probe succeeds, a is healthy and first again
        fake_a.script.fault = "none"
        await wait_for_health(client, "a", "half_open")
        assert await answer_in_turn(ws, 1, "p4") == ["a"]
        assert (await health_of(client))["a"] == "healthy"
        assert await answer_in_turn(ws, 2, "p5") == ["a", "a"]
    assert fake_a.stats.requests == 5


async def test_rate_limited_model_sits_out_its_retry_after_then_recovers(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_429"
    fake_a.script.retry_after = "0.3"
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with client.ws_connect(STREAM_URL) as ws:
        assert await answer_in_turn(ws, 2, "rl") == ["b", "b"]
        assert fake_a.stats.requests == 1
        assert (await health_of(client))["a"] == "unhealthy"
        fake_a.script.fault = "none"
        await wait_for_health(client, "a", "half_open")
        status, body = await post_chat(client)  # this time the probe is an HTTP chat
        assert status == 200 and body["model_id"] == "a"
        assert (await health_of(client))["a"] == "healthy"
        assert await answer_in_turn(ws, 1, "back") == ["a"]


# --------------------------------------------------------------------------------------
# load


LOAD_SOCKETS = 4
LOAD_PER_SOCKET = 50
LOAD_CLIENT = {"first_chunk_timeout": "10s", "idle_timeout": "10s", "timeout": "20s"}


async def test_load_with_a_flaky_model_answers_everything_and_leaks_nothing(
    sluice: MakeClient,
) -> None:
    flaky_script = FakeOpenAIScript(chunks=["Flaky", " but", " fine"], delay=0.002)
    healthy_script = FakeOpenAIScript(chunks=["Backup", " answer"], delay=0.002)
    # half of the flaky model's calls fail: one before its first chunk, one mid-stream
    cycle: list[Fault] = ["none", "http_500", "none", "truncated"]
    async with (
        run_cycling_fake(cycle, flaky_script) as flaky,
        run_cycling_fake(["none"], healthy_script) as healthy,
    ):
        # Generous deadlines and budgets: this test is about every request ending
        # right, and a starved CI runner must not turn it into a test of deadlines.
        relaxed: dict[str, Any] = {"client": LOAD_CLIENT, "error_budget": "10000/s"}
        client = await sluice(
            make_config(
                openai_model("flaky", flaky, **relaxed),
                openai_model("healthy", healthy, **relaxed),
                mid_stream="restart",
            )
        )
        expected = {"flaky": "Flaky but fine", "healthy": HEALTHY_TEXT}
        baseline = len(asyncio.all_tasks())

        async def one_socket(n: int) -> Frames:
            async with client.ws_connect(STREAM_URL) as ws:
                await send_all(ws, [f"s{n}-{i}" for i in range(LOAD_PER_SOCKET)])
                return await collect(ws, LOAD_PER_SOCKET, within=20.0)

        results = await asyncio.wait_for(
            asyncio.gather(*(one_socket(n) for n in range(LOAD_SOCKETS))), 25.0
        )
        total = LOAD_SOCKETS * LOAD_PER_SOCKET
        served: dict[str, int] = {"flaky": 0, "healthy": 0}
        resets = 0
        for n, frames in enumerate(results):
            assert set(frames) == {f"s{n}-{i}" for i in range(LOAD_PER_SOCKET)}
            for got in frames.values():
                model_id = served_by(got)
                assert_answered(got, model_id, expected[model_id])
                served[model_id] += 1
                got_resets = errors_named(got, "model_unavailable")
                assert len(got_resets) <= 1
                assert all(r["error"]["model_id"] == "flaky" for r in got_resets)
                resets += len(got_resets)
        # every request tried the flaky model first; the cycle fails exactly half
        assert flaky.stats.requests == total
        assert served == {"flaky": total // 2, "healthy": total // 2}
        assert resets == total // 4
        assert healthy.stats.requests == total // 2

        await flaky.stats.wait_idle(within=2.0)
        await healthy.stats.wait_idle(within=2.0)
        for _ in range(150):  # up to 3 s for the last tasks to finish
            if len(asyncio.all_tasks()) <= baseline:
                break
            await asyncio.sleep(0.02)
        leftover = asyncio.all_tasks()
        assert len(leftover) <= baseline, [t.get_coro() for t in leftover]
        assert await health_of(client) == {"flaky": "healthy", "healthy": "healthy"}
