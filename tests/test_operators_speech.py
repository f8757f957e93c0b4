"""Virtual-time tests of the operators the speech pipelines compose: `enclose`, `paced`,
`text_intake`, `intake_pcm` / `intake_notices`, and the speech-out piece `speak_text`."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import reactivex
from reactivex import Observable
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from audio.sentences import Sentence, TextPiece
from config.models import SpeechRouterConfig
from operators.audio_intake import EndOfAudio, intake_notices, intake_pcm
from operators.failover import AllModelsUnavailable, Reset
from operators.ordered import enclose
from operators.pacing import paced
from operators.text_intake import TextState, text_intake
from pipelines.speak_router import SegmentAudio, SpeakRouter
from pipelines.speech_out import SentenceEnd, speak_text
from protocol.frames import Frame, FrameFactory
from protocol.messages import ClientMessage
from providers.tts_types import PcmChunk, SpeechRequest
from providers.types import ErrorCategory, ProviderError
from routing.router import ModelRouter
from routing.strategies import PriorityStrategy

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe
T0 = ReactiveTest.subscribed

BOOM = ProviderError(ErrorCategory.TRANSIENT, "HTTP 500", status=500)


# ---- enclose ------------------------------------------------------------------------


def test_enclose_emits_head_at_subscription_and_tail_at_completion() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(2, "a"), on_next(3, "b"), on_completed(5))
    results = scheduler.start(lambda: source.pipe(enclose(lambda: "H", lambda: "T")))
    assert results.messages == [
        on_next(T0, "H"),
        on_next(T0 + 2, "a"),
        on_next(T0 + 3, "b"),
        on_next(T0 + 5, "T"),
        on_completed(T0 + 5),
    ]
    assert source.subscriptions == [subscribe(T0, T0 + 5)]


def test_enclose_passes_an_error_without_the_tail() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(1, "a"), on_error(2, BOOM))
    results = scheduler.start(lambda: source.pipe(enclose(lambda: "H", lambda: "T")))
    assert results.messages == [on_next(T0, "H"), on_next(T0 + 1, "a"), on_error(T0 + 2, BOOM)]


def test_enclose_subscribes_a_hot_source_in_the_same_call() -> None:
    hot: Subject[str] = Subject()
    seen: list[str] = []
    hot.pipe(enclose(lambda: "H", lambda: "T")).subscribe(seen.append)
    hot.on_next("right behind")
    assert seen == ["H", "right behind"]


# ---- paced --------------------------------------------------------------------------


def test_paced_subscribes_after_the_wait_asked_at_subscription() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(1, "a"), on_completed(2))
    waits = iter([3.0])
    results = scheduler.start(lambda: source.pipe(paced(lambda: next(waits))))
    assert results.messages == [on_next(T0 + 4, "a"), on_completed(T0 + 5)]
    assert source.subscriptions == [subscribe(T0 + 3, T0 + 5)]


def test_paced_without_a_wait_subscribes_at_once_and_passes_errors() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(1, "a"), on_error(2, BOOM))
    results = scheduler.start(lambda: source.pipe(paced(lambda: 0.0)))
    assert results.messages == [on_next(T0 + 1, "a"), on_error(T0 + 2, BOOM)]


def test_paced_disposed_during_the_wait_never_subscribes() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(1, "a"), on_completed(2))
    results = scheduler.start(lambda: source.pipe(paced(lambda: 50.0)), disposed=T0 + 10)
    assert results.messages == []
    assert source.subscriptions == []


# ---- text_intake -----------------------------------------------------------------------


def _frames() -> FrameFactory:
    return FrameFactory("r1", "speech", None, lambda: 0.0)


def _text(text: str, final: bool = False) -> ClientMessage:
    return ClientMessage("r1", "text", {"text": text, "final": final})


def test_text_intake_emits_the_first_piece_then_each_text_and_notices() -> None:
    scheduler = TestScheduler()
    later = scheduler.create_hot_observable(
        on_next(T0 + 1, _text("more ")),
        on_next(T0 + 2, ClientMessage("r1", "speak", {"text": "again"})),
        on_next(T0 + 3, _text("end.", final=True)),
        on_next(T0 + 4, _text("after")),
        on_completed(T0 + 5),
    )
    state = TextState()
    results = scheduler.start(
        lambda: later.pipe(text_intake(TextPiece("Hi. ", False), _frames(), 100, state))
    )
    values = [(m.time, m.value.value) for m in results.messages if m.value.kind == "N"]
    assert [(t, v) for t, v in values if isinstance(v, TextPiece)] == [
        (T0, TextPiece("Hi. ", False)),
        (T0 + 1, TextPiece("more ", False)),
        (T0 + 3, TextPiece("end.", True)),
    ]
    notices = [(t, v.data["error"]["name"]) for t, v in values if isinstance(v, Frame)]
    assert notices == [(T0 + 2, "duplicate_request_id"), (T0 + 4, "invalid_request")]
    assert all(not v.terminal for _, v in values if isinstance(v, Frame))
    assert results.messages[-1] == on_completed(T0 + 5)
    assert state.characters == len("Hi. more end.") and state.final


def test_text_intake_ends_with_a_terminal_text_too_long() -> None:
    scheduler = TestScheduler()
    later = scheduler.create_hot_observable(on_next(T0 + 1, _text("x" * 8)))
    results = scheduler.start(
        lambda: later.pipe(text_intake(TextPiece("abc", False), _frames(), 10, TextState()))
    )
    last = results.messages[-1].value.value
    assert results.messages[-1].time == T0 + 1
    assert isinstance(last, Frame) and last.terminal
    assert last.data["error"]["name"] == "text_too_long"


def test_text_intake_passes_errors() -> None:
    scheduler = TestScheduler()
    later = scheduler.create_hot_observable(on_error(T0 + 2, BOOM))
    results = scheduler.start(
        lambda: later.pipe(text_intake(TextPiece("a", True), _frames(), 10, TextState()))
    )
    assert results.messages[-1] == on_error(T0 + 2, BOOM)


# ---- intake_pcm / intake_notices --------------------------------------------------------


def test_intake_splits_pcm_until_the_end_from_notices() -> None:
    scheduler = TestScheduler()
    notice = _frames().error("audio_after_end", "late", finish_reason=None)
    items = scheduler.create_cold_observable(
        on_next(1, b"ab"),
        on_next(2, notice),
        on_next(3, b"cd"),
        on_next(4, EndOfAudio(False)),
        on_next(5, notice),
        on_error(6, BOOM),
    )
    pcm = scheduler.start(lambda: intake_pcm(items))
    assert pcm.messages == [on_next(T0 + 1, b"ab"), on_next(T0 + 3, b"cd"), on_completed(T0 + 4)]
    scheduler2 = TestScheduler()
    items2 = scheduler2.create_cold_observable(*items.messages)
    notices = scheduler2.start(lambda: intake_notices(items2))
    assert notices.messages == [
        on_next(T0 + 2, notice),
        on_next(T0 + 5, notice),
        on_error(T0 + 6, BOOM),
    ]


# ---- speak_text ---------------------------------------------------------------------------


def _chunk(ms: int) -> PcmChunk:
    return PcmChunk(np.ones(24 * ms, dtype=np.int16), 24000)


def _router(
    scheduler: TestScheduler, sources: dict[tuple[str, str], Observable[PcmChunk]], *ids: str
) -> SpeakRouter:
    client = {"first_chunk_timeout": 3, "idle_timeout": 2, "timeout": 60}
    config = SpeechRouterConfig.model_validate(
        {
            "id": "s",
            "retry": {"max_retries": 0},
            "speak": {"models": [{"id": i, "local": {}, "client": client} for i in ids]},
        }
    )
    assert config.speak is not None
    health = ModelRouter("s", config.speak.models, PriorityStrategy(), now=0.0)

    def source(model_id: str, request: SpeechRequest) -> Observable[PcmChunk]:
        return sources[(model_id, request.text)]

    return SpeakRouter(config, {}, health, random.Random(0), scheduler, source=source)


def test_speak_text_speaks_each_sentence_in_order_with_failover() -> None:
    scheduler = TestScheduler()
    a1 = scheduler.create_cold_observable(on_next(1, _chunk(20)), on_completed(2))
    a2 = scheduler.create_cold_observable(on_next(1, _chunk(20)), on_error(2, BOOM))
    b2 = scheduler.create_cold_observable(on_next(1, _chunk(20)), on_completed(3))
    router = _router(scheduler, {("a", "One."): a1, ("a", "Two."): a2, ("b", "Two."): b2}, "a", "b")
    pieces = reactivex.from_iterable([TextPiece("One. Tw", False), TextPiece("o.", True)])
    results = scheduler.start(lambda: pieces.pipe(speak_text(router, None, 24000, "r1")))
    kinds: list[tuple[float, Any]] = []
    for m in results.messages:
        v: Any = m.value.value if m.value.kind == "N" else m.value.kind
        if isinstance(v, Sentence):
            kinds.append((m.time, f"S{v.index}"))
        elif isinstance(v, SegmentAudio):
            kinds.append((m.time, f"A:{v.model_id}"))
        elif isinstance(v, Reset):
            kinds.append((m.time, f"R:{v.model_id}"))
        elif isinstance(v, SentenceEnd):
            kinds.append((m.time, f"E{v.sentence.index}"))
        else:
            kinds.append((m.time, v))
    assert kinds == [
        (T0, "S0"),
        (T0 + 1, "A:a"),
        (T0 + 2, "E0"),
        (T0 + 2, "S1"),
        (T0 + 3, "A:a"),
        (T0 + 4, "R:a"),
        (T0 + 5, "A:b"),
        (T0 + 7, "E1"),
        (T0 + 7, "C"),
    ]


def test_speak_text_errors_when_every_model_fails_a_sentence() -> None:
    scheduler = TestScheduler()
    bad = scheduler.create_cold_observable(on_error(1, BOOM))
    router = _router(scheduler, {("a", "One."): bad}, "a")
    pieces = reactivex.of(TextPiece("One.", True))
    results = scheduler.start(lambda: pieces.pipe(speak_text(router, None, 24000, "r1")))
    last = results.messages[-1]
    assert last.value.kind == "E" and isinstance(last.value.exception, AllModelsUnavailable)
