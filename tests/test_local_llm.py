"""Tests of the embedded llama.cpp provider against the real SmolLM2-135M engine.

Each test builds its own provider (loading takes ~0.15 s) so it lives on that test's
event loop; greedy decoding (temperature 0, fixed seed, repeat_penalty 1.3) keeps the
answers deterministic.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from config.models import LocalLLMConfig
from providers.local_llm import LocalLLMProvider, llama_params
from providers.types import ChatDelta, ChatParams, ErrorCategory, Message, ProviderError

GREEDY: dict[str, Any] = {"temperature": 0, "repeat_penalty": 1.3, "seed": 7}


def ask(text: str, **params: Any) -> ChatParams:
    """A one-message user request with greedy decoding plus `params`."""
    return ChatParams(messages=(Message("user", text),), params={**GREEDY, **params})


@pytest.fixture
async def provider() -> AsyncIterator[LocalLLMProvider]:
    """A fresh provider with the default (shipped) model, closed after the test."""
    llm = LocalLLMProvider(LocalLLMConfig(), provider_id="local-test")
    yield llm
    await llm.aclose()


async def collect(stream: AsyncIterator[ChatDelta]) -> list[ChatDelta]:
    """All deltas of a stream."""
    return [delta async for delta in stream]


async def answer(stream: AsyncIterator[ChatDelta]) -> str:
    """The whole text of a stream."""
    return "".join(delta.content for delta in await collect(stream))


# --- params merging (no engine needed) -------------------------------------------------


def test_params_overlay_defaults_and_drop_vendor_keys(caplog: pytest.LogCaptureFixture) -> None:
    defaults = {"max_tokens": 128, "temperature": 0.7, "repeat_penalty": 1.3}
    with caplog.at_level(logging.DEBUG, logger="providers.local_llm"):
        merged = llama_params(defaults, {"temperature": 0, "user": "u1", "logit_bias": {}})
    assert merged == {"max_tokens": 128, "temperature": 0, "repeat_penalty": 1.3}
    assert "logit_bias, user" in caplog.text


def test_params_of_the_wrong_type_are_a_bad_request() -> None:
    with pytest.raises(ProviderError) as info:
        llama_params({}, {"max_tokens": "lots"})
    assert info.value.category is ErrorCategory.BAD_REQUEST
    assert not info.value.retryable
    with pytest.raises(ProviderError):
        llama_params({}, {"stop": ["ok", 3]})
    assert llama_params({}, {"stop": "\n", "top_k": 5, "seed": None}) == {"stop": "\n", "top_k": 5}


# --- the real engine -------------------------------------------------------------------


@pytest.mark.slow
async def test_stream_yields_pieces_then_a_final_delta_with_usage(
    provider: LocalLLMProvider,
) -> None:
    loop_thread = threading.get_ident()
    deltas: list[ChatDelta] = []
    async for delta in provider.stream(ask("Name three colors.", max_tokens=16)):
        assert threading.get_ident() == loop_thread
        deltas.append(delta)

    *pieces, final = deltas
    assert len(pieces) >= 2
    assert all(p.content and p.finish_reason is None and p.usage is None for p in pieces)
    assert final.content == ""
    assert final.finish_reason in ("complete", "max_tokens")
    assert final.usage is not None
    assert final.usage.prompt_tokens > 10  # the template's system prompt + the question
    assert 0 < final.usage.response_tokens <= 16
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.response_tokens
    assert provider.load_seconds is not None and provider.load_seconds < 5
    assert provider.model_name == "SmolLM2-135M-Instruct"
    assert provider.provider_id == "local-test"


@pytest.mark.slow
async def test_max_tokens_ends_with_max_tokens(provider: LocalLLMProvider) -> None:
    deltas = await collect(provider.stream(ask("Write a long story about a dragon.", max_tokens=8)))
    assert deltas[-1].finish_reason == "max_tokens"
    assert deltas[-1].usage is not None and deltas[-1].usage.response_tokens in range(6, 11)


@pytest.mark.slow
async def test_greedy_decoding_gives_the_same_answer_twice(provider: LocalLLMProvider) -> None:
    params = ask("What is the capital of France?", max_tokens=16)
    first = await collect(provider.stream(params))
    assert "".join(d.content for d in first).strip()
    assert first[-1].finish_reason in ("complete", "max_tokens")
    assert first[-1].usage is not None and first[-1].usage.response_tokens > 0
    assert await answer(provider.stream(params)) == "".join(d.content for d in first)


@pytest.mark.slow
async def test_an_answer_with_no_text_is_only_a_final_delta(provider: LocalLLMProvider) -> None:
    # The router's output guard (operators.deadlines) turns this into EMPTY_OUTPUT.
    question = "Name three colors."
    first = await answer(provider.stream(ask(question, max_tokens=1)))
    deltas = await collect(provider.stream(ask(question, max_tokens=4, stop=[first[0]])))
    assert [d.content for d in deltas] == [""]
    assert deltas[-1].finish_reason == "complete"


@pytest.mark.slow
async def test_a_prompt_beyond_the_context_window_is_a_bad_request() -> None:
    llm = LocalLLMProvider(LocalLLMConfig(n_ctx=128))
    try:
        with pytest.raises(ProviderError) as info:
            await collect(llm.stream(ask("hello " * 300, max_tokens=4)))
        assert info.value.category is ErrorCategory.BAD_REQUEST
        assert not info.value.retryable
        # The engine survives its client's mistake.
        assert await answer(llm.stream(ask("Hi", max_tokens=4)))
    finally:
        await llm.aclose()


@pytest.mark.slow
async def test_a_missing_model_file_is_transient(tmp_path: Any) -> None:
    llm = LocalLLMProvider(LocalLLMConfig(model_path=str(tmp_path / "nope.gguf")))
    try:
        with pytest.raises(ProviderError) as info:
            await collect(llm.stream(ask("Hi", max_tokens=4)))
        assert info.value.category is ErrorCategory.TRANSIENT
    finally:
        await llm.aclose()


@pytest.mark.slow
async def test_the_event_loop_keeps_ticking_during_load_and_generation() -> None:
    llm = LocalLLMProvider(LocalLLMConfig())  # not yet loaded: loading is covered too
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        deltas = await collect(llm.stream(ask("Write a short poem about the sea.", max_tokens=64)))
    finally:
        done.set()
        await tick
        await llm.aclose()
    assert deltas[-1].finish_reason is not None
    assert len(gaps) > 20
    assert max(gaps) < 0.1, f"the loop stalled for {max(gaps) * 1000:.0f} ms"


class CountingLLM(LocalLLMProvider):
    """The local engine, counting what each generation emitted before it ended."""

    def __init__(self) -> None:
        super().__init__(LocalLLMConfig())
        self.emitted: list[int] = []

    def _generate(self, messages: Any, kwargs: Any, cancel: Any, emit: Any) -> None:
        count = 0

        def counted(item: Any) -> None:
            nonlocal count
            count += 1
            emit(item)

        try:
            super()._generate(messages, kwargs, cancel, counted)
        finally:
            self.emitted.append(count)


LONG = "Write a very long and detailed story about a dragon who learns to cook."


@pytest.mark.slow
async def test_cancelling_the_consumer_frees_the_worker() -> None:
    baseline = threading.active_count()
    llm = CountingLLM()
    got_pieces = asyncio.Event()
    seen: list[str] = []

    async def consume() -> None:
        async for delta in llm.stream(ask(LONG, max_tokens=400)):
            seen.append(delta.content)
            if len(seen) == 3:
                got_pieces.set()

    task = asyncio.create_task(consume())
    await got_pieces.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # one worker thread: this answer runs only once the first generation left
    assert await answer(llm.stream(ask("Name three colors.", max_tokens=8)))
    assert llm.emitted[0] < 200  # it stopped near the 3 pieces read, far from 400 tokens
    assert len(seen) < 20

    await llm.aclose()
    assert threading.active_count() == baseline


@pytest.mark.slow
async def test_closing_the_stream_early_frees_the_worker() -> None:
    baseline = threading.active_count()
    llm = CountingLLM()
    stream = llm.stream(ask(LONG, max_tokens=400))
    pieces = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    assert all(p.content for p in pieces)

    # one worker thread: the second answer runs only once the first generation left
    deltas = await collect(llm.stream(ask("Name three colors.", max_tokens=8)))
    assert deltas[-1].finish_reason is not None
    first = llm.emitted[0]
    assert first < 200  # it stopped near the 3 pieces read, far from its 400 tokens

    await llm.aclose()
    assert threading.active_count() == baseline


@pytest.mark.slow
async def test_aclose_ends_a_running_stream_with_an_error() -> None:
    llm = LocalLLMProvider(LocalLLMConfig())
    stream = llm.stream(ask(LONG, max_tokens=400))
    assert (await anext(stream)).content
    await llm.aclose()
    with pytest.raises(ProviderError) as info:
        async for _ in stream:
            pass
    assert info.value.category is ErrorCategory.TRANSIENT
    with pytest.raises(ProviderError):
        await collect(llm.stream(ask("Hi")))
    await llm.aclose()  # idempotent


@pytest.mark.slow
async def test_concurrent_streams_are_served_one_after_another(
    provider: LocalLLMProvider,
) -> None:
    order: list[str] = []

    async def run(name: str, question: str) -> ChatDelta:
        last = ChatDelta("")
        async for delta in provider.stream(ask(question, max_tokens=16)):
            if delta.content:
                order.append(name)
            last = delta
        return last

    first, second = await asyncio.gather(
        run("a", "Name three colors."), run("b", "Name three animals.")
    )
    assert first.finish_reason is not None and second.finish_reason is not None
    assert order.count("a") > 0 and order.count("b") > 0
    # FIFO on one worker: every piece of the first request comes before the second's.
    assert order == sorted(order)
