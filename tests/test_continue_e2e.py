"""`mid_stream: continue` end to end: one seamless answer across a mid-stream failover.

Real chatStream, HTTP chat and OpenAI-SDK clients against Sluice on loopback, in
front of fake vendors that continue from a prefill the way their vendor does. The
faulty and the healthy fake speak the same answer, so a correct continuation is
exactly that answer, once, whatever the fault and wherever it struck.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from config.models import DEFAULT_CONTINUATION_INSTRUCTION
from fakes.anthropic_server import FakeAnthropic, run_fake_anthropic
from fakes.cohere_server import FakeCohere, run_fake_cohere
from fakes.openai_server import FakeOpenAI, Fault
from tests.conftest import MakeClient, collect, is_terminal, make_config, openai_model
from tests.openai_sdk import sdk

STREAM_URL = "/v1/language/r/chatStream"
CHAT_URL = "/v1/language/r/chat"

ANSWER = ["The quick ", "brown fox ", "jumps over ", "the lazy dog."]
WHOLE = "".join(ANSWER)
SENT_BEFORE_FAULT = 2
PARTIAL = "".join(ANSWER[:SENT_BEFORE_FAULT])

CONTINUE_FAULTS: tuple[Fault, ...] = (
    "truncated",
    "stall_mid_stream",
    "malformed",
    "error_mid_stream",
)
FAULTY_CLIENT = {"first_chunk_timeout": "250ms", "idle_timeout": "250ms", "timeout": "5s"}


def chat(request_id: str, **extra: Any) -> str:
    """A chatStream request frame."""
    return json.dumps(
        {"request_id": request_id, "message": {"role": "user", "content": "hi"}, **extra}
    )


def content_of(frames: list[dict[str, Any]]) -> str:
    """Every chunk's content, concatenated (no reset honoured: continue never sends one)."""
    return "".join(
        f["chunk"]["model_response"]["message"]["content"] for f in frames if f["type"] == "chunk"
    )


def faulty_and_healthy(faulty: FakeOpenAI, healthy: FakeOpenAI, fault: Fault) -> None:
    """Both fakes say ANSWER; the faulty one breaks after SENT_BEFORE_FAULT chunks."""
    faulty.script.chunks = list(ANSWER)
    faulty.script.fault = fault
    faulty.script.fault_after_chunks = SENT_BEFORE_FAULT
    healthy.script.chunks = list(ANSWER)


def assert_seamless(frames: list[dict[str, Any]], healthy_provider: str = "openai") -> None:
    """One uninterrupted answer: no error frame, one terminal chunk, one switch marker."""
    assert [f["type"] for f in frames] == ["chunk"] * len(frames), frames
    assert sum(1 for f in frames if is_terminal(f)) == 1 and is_terminal(frames[-1])
    assert frames[-1]["chunk"]["finish_reason"] == "complete"
    assert content_of(frames) == WHOLE
    models = [f["chunk"]["model_id"] for f in frames]
    switch_at = models.index("healthy")
    assert set(models[:switch_at]) == {"faulty"} and set(models[switch_at:]) == {"healthy"}
    marked = [f for f in frames if "switched_from" in f["chunk"]]
    assert marked == [frames[switch_at]]
    assert frames[switch_at]["chunk"]["switched_from"] == {
        "model_id": "faulty",
        "provider_id": "openai",
        "at_char": len(PARTIAL),
    }
    assert frames[switch_at]["chunk"]["provider_id"] == healthy_provider


@pytest.mark.parametrize("fault", CONTINUE_FAULTS)
async def test_a_mid_stream_failure_continues_into_one_answer(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI, fault: Fault
) -> None:
    faulty_and_healthy(fake_a, fake_b, fault)
    client = await sluice(
        make_config(
            openai_model("faulty", fake_a, client=FAULTY_CLIENT), openai_model("healthy", fake_b)
        )
    )
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("c1"))
        frames = await collect(ws, 1)
    assert_seamless(frames["c1"])
    sent = fake_b.stats.last_body
    assert sent is not None
    assert sent["messages"][-1] == {"role": "assistant", "content": PARTIAL}
    assert sent["messages"][0] == {"role": "system", "content": DEFAULT_CONTINUATION_INSTRUCTION}
    assert sent["messages"][1] == {"role": "user", "content": "hi"}


async def test_a_repeated_tail_is_trimmed(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    faulty_and_healthy(fake_a, fake_b, "truncated")
    fake_b.script.prefill_overlap = len("brown fox ")  # restates the last chunk
    client = await sluice(
        make_config(openai_model("faulty", fake_a), openai_model("healthy", fake_b))
    )
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("o1"))
        frames = await collect(ws, 1)
    assert_seamless(frames["o1"])


async def test_the_users_system_prompt_stays_and_an_empty_instruction_adds_nothing(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    faulty_and_healthy(fake_a, fake_b, "truncated")
    client = await sluice(
        make_config(
            openai_model("faulty", fake_a),
            openai_model("healthy", fake_b),
            continuation_instruction="",
        )
    )
    history = [{"role": "system", "content": "Answer in English."}]
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("s1", message_history=history))
        frames = await collect(ws, 1)
    assert_seamless(frames["s1"])
    assert fake_b.stats.last_body is not None
    assert fake_b.stats.last_body["messages"] == [
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": PARTIAL},
    ]


@pytest.fixture
async def anthropic() -> AsyncIterator[FakeAnthropic]:
    """A fake Anthropic upstream saying ANSWER."""
    async with run_fake_anthropic() as fake:
        fake.script.chunks = list(ANSWER)
        yield fake


async def test_anthropic_continues_from_its_prefill(
    sluice: MakeClient, fake_a: FakeOpenAI, anthropic: FakeAnthropic
) -> None:
    faulty_and_healthy(fake_a, fake_a, "truncated")
    client = await sluice(
        make_config(
            openai_model("faulty", fake_a),
            {"id": "healthy", "anthropic": {"base_url": anthropic.url, "api_key": "ak-1"}},
        )
    )
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("a1"))
        frames = await collect(ws, 1)
    assert_seamless(frames["a1"], healthy_provider="anthropic")
    sent = anthropic.stats.last_body
    assert sent is not None
    # the API refuses a prefill ending in whitespace: it is cut, and not said twice
    assert sent["messages"][-1] == {"role": "assistant", "content": PARTIAL.rstrip()}
    assert sent["system"] == DEFAULT_CONTINUATION_INSTRUCTION


@pytest.fixture
async def cohere() -> AsyncIterator[FakeCohere]:
    """A fake Cohere upstream (no prefill) saying ANSWER."""
    async with run_fake_cohere() as fake:
        fake.script.chunks = list(ANSWER)
        yield fake


async def test_a_model_that_cannot_continue_restarts_that_hop(
    sluice: MakeClient, fake_a: FakeOpenAI, cohere: FakeCohere
) -> None:
    faulty_and_healthy(fake_a, fake_a, "truncated")
    client = await sluice(
        make_config(
            openai_model("faulty", fake_a),
            {"id": "healthy", "cohere": {"base_url": cohere.url, "api_key": "co-1"}},
        )
    )
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("r1"))
        frames = await collect(ws, 1)
    got = frames["r1"]
    kinds = [f["type"] for f in got]
    (reset,) = [f for f in got if f["type"] == "error"]
    assert reset["error"]["name"] == "model_unavailable" and "finish_reason" not in reset["error"]
    at = kinds.index("error")
    assert content_of(got[:at]) == PARTIAL
    assert content_of(got[at + 1 :]) == WHOLE  # the whole answer again, from the start
    assert not any("switched_from" in f.get("chunk", {}) for f in got)
    assert cohere.stats.last_body is not None
    assert cohere.stats.last_body["messages"][-1]["role"] == "user"  # never a prefill


async def test_a_model_configured_not_to_continue_restarts_that_hop(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    faulty_and_healthy(fake_a, fake_b, "truncated")
    client = await sluice(
        make_config(
            openai_model("faulty", fake_a),
            openai_model("healthy", fake_b, capabilities={"continuation": False}),
        )
    )
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("n1"))
        frames = await collect(ws, 1)
    names = [f["error"]["name"] for f in frames["n1"] if f["type"] == "error"]
    assert names == ["model_unavailable"]
    assert fake_b.stats.last_body is not None
    assert fake_b.stats.last_body["messages"][-1] == {"role": "user", "content": "hi"}


async def test_sync_chat_returns_the_continued_answer_and_the_models_used(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    faulty_and_healthy(fake_a, fake_b, "truncated")
    client = await sluice(
        make_config(openai_model("faulty", fake_a), openai_model("healthy", fake_b))
    )
    resp = await client.post(CHAT_URL, json={"message": {"role": "user", "content": "hi"}})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["model_id"] == "healthy"
    assert body["model_response"]["message"]["content"] == WHOLE
    assert body["model_response"]["metadata"]["models"] == "faulty,healthy"
    assert body["model_response"]["finish_reason"] == "complete"
    assert body["model_response"]["token_usage"]["total_tokens"] > 0


async def test_openai_sdk_sees_one_stream_without_an_error(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    faulty_and_healthy(fake_a, fake_b, "error_mid_stream")
    client = await sluice(
        make_config(openai_model("faulty", fake_a), openai_model("healthy", fake_b))
    )
    received: list[str] = []
    models: list[str] = []
    async with sdk(client) as oai:
        stream = await oai.chat.completions.create(
            model="r", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            models.append(chunk.model)
            received.append(chunk.choices[0].delta.content or "")
        full = await oai.chat.completions.create(
            model="r", messages=[{"role": "user", "content": "hi"}]
        )
    assert "".join(received) == WHOLE
    assert models[0] == "r/faulty" and models[-1] == "r/healthy"
    assert full.choices[0].message.content == WHOLE
    assert full.model == "r/healthy"


async def test_sync_chat_fails_over_at_the_first_chunk_deadline(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    # the stalled model's overall timeout is beyond this test's own 60 s limit:
    # only the first-chunk deadline can move the request on
    fake_a.script.fault = "stall_before_first"
    stalled = {"first_chunk_timeout": "200ms", "idle_timeout": "200ms", "timeout": "300s"}
    # a slow but healthy answer takes longer than those deadlines in total
    fake_b.script.chunks = [f"w{i} " for i in range(8)]
    fake_b.script.delay = 0.1
    slow_ok = {"first_chunk_timeout": "300ms", "idle_timeout": "300ms", "timeout": "300s"}
    client = await sluice(
        make_config(
            openai_model("stalled", fake_a, client=stalled),
            openai_model("healthy", fake_b, client=slow_ok),
            deadline="300s",
        )
    )
    resp = await client.post(CHAT_URL, json={"message": {"role": "user", "content": "hi"}})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["model_id"] == "healthy"
    assert body["model_response"]["message"]["content"] == "".join(fake_b.script.chunks)
    assert fake_b.stats.last_body is not None and fake_b.stats.last_body["stream"] is True


async def test_a_stalled_only_model_ends_within_the_router_deadline(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.fault = "stall_before_first"
    slow = {"first_chunk_timeout": "300s", "idle_timeout": "300s", "timeout": "300s"}
    client = await sluice(make_config(openai_model("a", fake_a, client=slow), deadline="300ms"))
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("d1"))
        frames = await collect(ws, 1, within=30.0)
    (terminal,) = frames["d1"]
    assert terminal["error"]["name"] == "all_models_unavailable"
    assert "the request's deadline ran out during this attempt" in terminal["error"]["message"]
    assert "0.3s deadline ran out" in terminal["error"]["message"]


async def test_a_request_may_ask_for_a_shorter_deadline_never_a_longer_one(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.fault = "stall_before_first"
    slow = {"first_chunk_timeout": "300s", "idle_timeout": "300s", "timeout": "300s"}
    client = await sluice(make_config(openai_model("a", fake_a, client=slow), deadline="250ms"))
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("short", deadline_ms=100))
        await ws.send_str(chat("long", deadline_ms=600_000))
        frames = await collect(ws, 2, within=30.0)
    assert "0.1s deadline ran out" in frames["short"][-1]["error"]["message"]
    assert "0.25s deadline ran out" in frames["long"][-1]["error"]["message"]
    resp = await client.post(
        CHAT_URL, json={"message": {"role": "user", "content": "hi"}, "deadline_ms": 100}
    )
    body = await resp.json()
    assert resp.status == 503 and body["name"] == "all_models_unavailable"
    assert "0.1s deadline ran out" in body["message"]


async def test_retry_passes_do_not_wait_when_every_model_is_disabled(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_401"
    # a retry pass 200 s away would outlive this test: it must not be waited for
    retry = {"max_retries": 3, "min_delay": "200s", "max_delay": "200s", "jitter": 0}
    client = await sluice(make_config(openai_model("a", fake_a), retry=retry, deadline="600s"))
    async with client.ws_connect(STREAM_URL) as ws:
        await ws.send_str(chat("x1"))
        frames = await collect(ws, 1, within=30.0)
    message = frames["x1"][-1]["error"]["message"]
    assert "a: auth (HTTP 401)" in message
    assert "no model can be tried again within the request's 600s deadline (a disabled)" in message
    assert fake_a.stats.requests == 1
