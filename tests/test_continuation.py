"""The pieces of `mid_stream: continue`: overlap trimming and assembling one answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from reactivex.testing import ReactiveTest, TestScheduler

from config import check_config
from operators.failover import Reset
from pipelines.chat_router import (
    ChatChunk,
    ChatCompletion,
    ModelInfo,
    assemble_completion,
    overlap,
    raw_cut,
)
from providers.types import ChatDelta, ErrorCategory, ProviderError, TokenUsage

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
T0 = ReactiveTest.subscribed

A = ModelInfo("a", "openai", "gpt-a")
B = ModelInfo("b", "anthropic", "claude-b")
BOOM = ProviderError(ErrorCategory.TRANSIENT, "HTTP 500", status=500)


@pytest.mark.parametrize(
    ("tail", "head", "final", "expected"),
    [
        ("the quick brown fox", " brown fox jumps", False, 10),  # a repeat: trimmed
        ("the quick brown fox", " jumps", False, 0),  # a plain continuation
        ("the quick brown fox", " brown f", False, None),  # too early to tell
        ("the quick brown fox", " brown f", True, 0),  # ...unless nothing more comes
        ("the quick brown fox ", "fox jumps", False, 0),  # "fox " is under MIN_OVERLAP
        ("partial", "partial text", False, 7),  # the whole partial answer, though short
        ("a b. c d", "x", False, 0),
    ],
)
def test_overlap(tail: str, head: str, final: bool, expected: int | None) -> None:
    assert overlap(tail, head, final) == expected


def test_raw_cut_counts_a_whitespace_run_as_one() -> None:
    assert raw_cut("brown \n\n fox jumps", len("brown fox")) == len("brown \n\n fox")
    assert raw_cut("brown fox  ", len("brown fox ")) == len("brown fox  ")
    assert raw_cut("ab", 5) == 2


def chunk(info: ModelInfo, text: str, finish: bool = False) -> ChatChunk:
    """A streamed chunk (the final one with usage and metadata)."""
    if finish:
        return ChatChunk(
            info, ChatDelta(text, "complete", TokenUsage(3, 4, 7), {"response_id": "x"})
        )
    return ChatChunk(info, ChatDelta(text))


def test_assemble_a_continued_answer_names_every_model() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, chunk(A, "Hel")),
        on_next(2, chunk(B, "lo")),
        on_next(3, chunk(B, "", finish=True)),
        on_completed(4),
    )
    results = scheduler.start(lambda: source.pipe(assemble_completion()))
    assert [m.time for m in results.messages] == [T0 + 3, T0 + 3]
    completion = results.messages[0].value.value
    assert isinstance(completion, ChatCompletion)
    assert completion.result.content == "Hello"
    assert completion.model == B and completion.models == ("a", "b")
    assert completion.result.metadata == {"response_id": "x", "models": "a,b"}
    assert completion.result.usage == TokenUsage(3, 4, 7)


def test_assemble_drops_the_text_before_a_reset() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, chunk(A, "partial")),
        on_next(2, Reset("a", BOOM)),
        on_next(3, chunk(B, "whole", finish=True)),
        on_completed(4),
    )
    results = scheduler.start(lambda: source.pipe(assemble_completion()))
    completion = results.messages[0].value.value
    assert completion.result.content == "whole" and completion.models == ("b",)
    assert "models" not in completion.result.metadata


def test_assemble_passes_errors_and_fails_an_unfinished_answer() -> None:
    scheduler = TestScheduler()
    failing = scheduler.create_cold_observable(on_next(1, chunk(A, "x")), on_error(2, BOOM))
    results = scheduler.start(lambda: failing.pipe(assemble_completion()))
    assert results.messages == [on_error(T0 + 2, BOOM)]

    scheduler = TestScheduler()
    unfinished = scheduler.create_cold_observable(on_next(1, chunk(A, "x")), on_completed(2))
    results = scheduler.start(lambda: unfinished.pipe(assemble_completion()))
    (message,) = results.messages
    assert message.time == T0 + 2
    assert isinstance(message.value.exception, ProviderError)


def test_check_config_names_file_line_and_field_of_the_new_router_options(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sluice.yaml"
    path.write_text(
        "routers:\n"
        "  language:\n"
        "    - id: r\n"
        "      mid_stream: resume\n"
        "      deadline: 0s\n"
        "      models:\n"
        "        - id: a\n"
        "          capabilities: {continuation: maybe}\n"
        "          openai: {}\n"
    )
    problems = check_config(path)
    assert any(
        p.startswith(f"{path}:4:") and "routers.language[0].mid_stream" in p for p in problems
    )
    assert any(p.startswith(f"{path}:5:") and "routers.language[0].deadline" in p for p in problems)
    assert any(
        p.startswith(f"{path}:8:") and "models[0].capabilities.continuation" in p for p in problems
    )
