"""Virtual-time tests of the listen operators: ordered delivery, deadlines from the
segment end, per-segment failover with replay from the last committed result, and
the audio intake's limit."""

from __future__ import annotations

import random
from typing import Any

import reactivex
from reactivex import Observable
from reactivex import operators as ops
from reactivex.disposable import Disposable
from reactivex.subject import AsyncSubject, Subject
from reactivex.testing import ReactiveTest, TestScheduler

from audio.pcm import InputFormat, open_decoder
from config.models import SpeechRouterConfig
from operators.audio_intake import EndOfAudio, IntakeState, audio_intake
from operators.failover import AllModelsUnavailable, Reset
from operators.final_deadline import final_deadline
from operators.live_segments import live_segments
from operators.ordered import concat_eager, merge_now, then_emit
from operators.vad import SpeechAudio, SpeechEnded, SpeechStarted, VadSettings
from pipelines.listen_router import ListenRouter, ModelInfo, SegmentTranscript, Transcriber
from pipelines.speech_in import Transcribed, hear
from protocol.frames import Frame, FrameFactory
from protocol.listen import ListenRequestIn
from protocol.messages import ClientMessage
from providers.stt_types import (
    SegmentAudio,
    SttCommitted,
    SttEvent,
    SttFinal,
    SttInterim,
    SttRequest,
)
from providers.types import ErrorCategory, ProviderError
from routing.router import ModelRouter
from routing.strategies import build_strategy

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe
T0 = ReactiveTest.subscribed


def values(messages: list[Any]) -> list[tuple[float, Any]]:
    return [(m.time, m.value.value) for m in messages if m.value.kind == "N"]


# ---- concat_eager -----------------------------------------------------------------


def test_concat_eager_runs_inners_at_once_and_delivers_in_order() -> None:
    scheduler = TestScheduler()
    a = scheduler.create_cold_observable(on_next(10, "a1"), on_next(50, "a2"), on_completed(60))
    b = scheduler.create_cold_observable(on_next(5, "b1"), on_completed(10))
    c = scheduler.create_cold_observable(on_next(100, "c1"), on_completed(110))
    outer = scheduler.create_hot_observable(
        on_next(210, a), on_next(220, b), on_next(230, c), on_completed(240)
    )
    results = scheduler.start(lambda: outer.pipe(concat_eager()))
    assert results.messages == [
        on_next(220, "a1"),
        on_next(260, "a2"),
        on_next(270, "b1"),  # held from 225 until a completed at 270
        on_next(330, "c1"),
        on_completed(340),
    ]
    assert b.subscriptions == [subscribe(220, 230)]  # subscribed at once, not after a


def test_concat_eager_delivers_an_inner_error_in_order_and_disposes_the_rest() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("segment 1 failed")
    a = scheduler.create_cold_observable(on_next(40, "a1"), on_completed(50))
    b = scheduler.create_cold_observable(on_error(5, boom))
    c = scheduler.create_cold_observable(on_next(100, "c1"), on_completed(110))
    outer = scheduler.create_hot_observable(on_next(210, a), on_next(215, b), on_next(216, c))
    results = scheduler.start(lambda: outer.pipe(concat_eager()))
    assert results.messages == [on_next(250, "a1"), on_error(260, boom)]
    assert c.subscriptions == [subscribe(216, 260)]


def test_concat_eager_passes_an_outer_error_at_once() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("vad failed")
    a = scheduler.create_cold_observable(on_next(40, "a1"), on_completed(50))
    outer = scheduler.create_hot_observable(on_next(210, a), on_error(220, boom))
    results = scheduler.start(lambda: outer.pipe(concat_eager()))
    assert results.messages == [on_error(220, boom)]
    assert a.subscriptions == [subscribe(210, 220)]


def test_merge_now_subscribes_every_source_before_returning() -> None:
    scheduler = TestScheduler()
    a = scheduler.create_cold_observable(on_next(10, "a"), on_completed(30))
    b = scheduler.create_cold_observable(on_next(20, "b"), on_completed(40))
    results = scheduler.start(lambda: merge_now(a, b))
    assert results.messages == [on_next(210, "a"), on_next(220, "b"), on_completed(240)]
    # a hot source loses nothing: both are subscribed during the subscribe call
    hot: Subject[str] = Subject()
    seen: list[str] = []
    merge_now(hot, hot).subscribe(seen.append, scheduler=scheduler)
    hot.on_next("x")
    assert seen == ["x", "x"]


def test_merge_now_stops_at_the_first_error() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("boom")
    a = scheduler.create_cold_observable(on_next(10, "a"), on_error(15, boom))
    b = scheduler.create_cold_observable(on_next(20, "b"), on_completed(40))
    results = scheduler.start(lambda: merge_now(a, b))
    assert results.messages == [on_next(210, "a"), on_error(215, boom)]
    assert b.subscriptions == [subscribe(200, 215)]


def test_merge_now_with_a_source_failing_at_once_disposes_the_others_at_once() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("refused")
    b = scheduler.create_cold_observable(on_next(20, "b"), on_completed(40))
    results = scheduler.start(lambda: merge_now(reactivex.throw(boom), b))
    assert results.messages == [on_error(200, boom)]
    assert b.subscriptions == [subscribe(200, 200)]

    def refuse(observer: Any, scheduler: Any = None) -> Any:
        observer.on_error(boom)  # during subscribe, before merge_now reaches `c`
        return Disposable()

    c = scheduler.create_cold_observable(on_next(20, "c"), on_completed(40))
    seen: list[Any] = []
    merge_now(Observable(refuse), c).subscribe(seen.append, seen.append, scheduler=scheduler)
    assert seen == [boom]
    assert c.subscriptions == []  # never subscribed


def test_merge_now_of_nothing_completes_and_disposal_reaches_every_source() -> None:
    assert TestScheduler().start(lambda: merge_now()).messages == [on_completed(200)]
    scheduler = TestScheduler()
    a = scheduler.create_cold_observable(on_next(10, "a"), on_completed(500))
    b = scheduler.create_cold_observable(on_next(900, "b"), on_completed(950))
    results = scheduler.start(lambda: merge_now(a, b), disposed=400)
    assert results.messages == [on_next(210, "a")]
    assert a.subscriptions == [subscribe(200, 400)]
    assert b.subscriptions == [subscribe(200, 400)]


def test_then_emit_adds_a_last_item_computed_at_completion() -> None:
    scheduler = TestScheduler()
    counter = {"n": 0}

    def last() -> str:
        return f"done after {counter['n']}"

    source = scheduler.create_cold_observable(on_next(5, 1), on_next(6, 2), on_completed(9))
    results = scheduler.start(
        lambda: source.pipe(
            ops.do_action(lambda _: counter.__setitem__("n", counter["n"] + 1)), then_emit(last)
        )
    )
    assert results.messages == [
        on_next(205, 1),
        on_next(206, 2),
        on_next(209, "done after 2"),
        on_completed(209),
    ]
    other = TestScheduler()
    boom = RuntimeError("boom")
    failing = other.create_cold_observable(on_error(3, boom))
    assert other.start(lambda: failing.pipe(then_emit(last))).messages == [on_error(203, boom)]


# ---- final_deadline ---------------------------------------------------------------


def _deadline_run(
    items: list[Any], ended_at: float, final_within: float = 3, idle: float = 2
) -> tuple[list[Any], Any]:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(*items)
    ended = scheduler.create_hot_observable(on_next(T0 + ended_at, "end"))
    results = scheduler.start(
        lambda: source.pipe(final_deadline(ended, final_within, idle, lambda v: v == "f"))
    )
    return list(results.messages), source


def test_final_deadline_only_counts_after_the_segment_end() -> None:
    messages, _ = _deadline_run(
        [on_next(1, "i"), on_next(3, "i"), on_next(40, "i"), on_next(41, "f"), on_completed(42)],
        ended_at=39,
    )
    assert [m.time - T0 for m in messages] == [1, 3, 40, 41, 42]  # 36 s of speech is fine


def test_final_deadline_fires_on_a_gap_after_the_end() -> None:
    messages, source = _deadline_run(
        [on_next(1, "i"), on_next(3, "i"), on_next(10, "i"), on_next(15, "f")], ended_at=5
    )
    assert [m.time - T0 for m in messages] == [1, 3, 7]
    error = messages[-1].value.exception
    assert isinstance(error, ProviderError) and error.category is ErrorCategory.TIMEOUT
    assert "no final transcript for 2s" in str(error)
    assert source.subscriptions == [subscribe(T0, T0 + 7)]


def test_final_deadline_fires_when_interims_never_end_in_a_final() -> None:
    messages, _ = _deadline_run([on_next(t, "i") for t in range(1, 20)], ended_at=5)
    assert messages[-1].time == T0 + 8
    assert "within 3s of the segment end" in str(messages[-1].value.exception)


def test_final_deadline_with_an_end_that_already_happened() -> None:
    scheduler = TestScheduler()
    ended: AsyncSubject[int] = AsyncSubject()
    ended.on_next(1)
    ended.on_completed()
    source = scheduler.create_cold_observable(on_next(10, "f"), on_completed(11))
    results = scheduler.start(lambda: source.pipe(final_deadline(ended, 3, 9, lambda v: v == "f")))
    assert results.messages[-1].time == T0 + 3
    assert isinstance(results.messages[-1].value.exception, ProviderError)


def test_final_deadline_passes_errors_and_a_timely_final() -> None:
    boom = ProviderError(ErrorCategory.TRANSIENT, "socket dropped")
    messages, _ = _deadline_run([on_next(1, "i"), on_error(2, boom)], ended_at=1)
    assert messages[-1] == on_error(T0 + 2, boom)
    messages, _ = _deadline_run([on_next(6, "f"), on_completed(20)], ended_at=5)
    assert [m.time - T0 for m in messages] == [6, 20]  # no deadline after the final


# ---- ListenRouter.transcribe -------------------------------------------------------


def _router(
    transcribers: dict[str, Transcriber], max_retries: int = 0
) -> tuple[ListenRouter, ModelRouter]:
    config = SpeechRouterConfig.model_validate(
        {
            "id": "speech",
            "retry": {"max_retries": max_retries, "min_delay": 1, "max_delay": 1, "jitter": 0},
            "listen": {
                "models": [
                    {
                        "id": model_id,
                        "client": {"first_chunk_timeout": 2, "idle_timeout": 5, "timeout": 60},
                        "local": {},
                    }
                    for model_id in transcribers
                ]
            },
        }
    )
    assert config.listen is not None
    models = config.listen.models
    health = ModelRouter("speech", models, build_strategy("priority", models), now=0.0)
    router = ListenRouter(
        "speech",
        config,
        transcribers,
        {m: ModelInfo(m, "fake", f"fake-{m}") for m in transcribers},
        {m: 16000 for m in transcribers},
        health,
        random.Random(0),
    )
    return router, health


def _segment(scheduler: TestScheduler, finish_at: float) -> SegmentAudio:
    segment = SegmentAudio(3, start_ms=1000, audio_start_ms=700, sample_rate=16000)
    segment.append(b"\x01\x00" * 16000)  # one second

    def finish(*_: Any) -> None:
        segment.finish(end_ms=1600, audio_end_ms=1700)

    scheduler.schedule_absolute(finish_at, finish)
    return segment


def _cold(scheduler: TestScheduler, requests: list[SttRequest], *items: Any) -> Transcriber:
    source = scheduler.create_cold_observable(*items)

    def transcribe(request: SttRequest) -> Observable[SttEvent]:
        requests.append(request)
        return source

    return transcribe


def test_a_failed_attempt_is_replayed_from_its_last_committed_result() -> None:
    scheduler = TestScheduler()
    segment = _segment(scheduler, finish_at=T0 + 2)
    drop = ProviderError(ErrorCategory.TRANSIENT, "websocket closed mid-stream")
    first: list[SttRequest] = []
    second: list[SttRequest] = []
    router, health = _router(
        {
            "streaming": _cold(
                scheduler,
                first,
                on_next(1, SttInterim("pcm")),
                on_next(2, SttCommitted("hello there", 400)),
                on_next(3, SttInterim("hello there gen")),
                on_error(4, drop),
            ),
            "backup": _cold(
                scheduler, second, on_next(1, SttFinal("general kenobi")), on_completed(2)
            ),
        }
    )
    results = scheduler.start(lambda: router.transcribe(segment, "en-US", interim=True))
    texts = [
        (
            t - T0,
            v.text if isinstance(v, SegmentTranscript) else "RESET",
            getattr(v, "is_final", None),
        )
        for t, v in values(results.messages)
    ]
    assert texts == [
        (1, "pcm", False),
        (2, "hello there", False),
        (3, "hello there gen", False),
        (4, "RESET", None),
        (5, "hello there general kenobi", True),
    ]
    assert first[0].offset_ms == 0 and second[0].offset_ms == 400
    assert second[0].start_byte == 400 * 32
    assert second[0].language == "en-US" and second[0].interim_results
    final = values(results.messages)[-1][1]
    assert (final.segment_id, final.start_ms, final.end_ms) == (3, 1000, 1600)
    assert final.model == ModelInfo("backup", "fake", "fake-backup")
    reset = values(results.messages)[3][1]
    assert isinstance(reset, Reset) and reset.model_id == "streaming"
    assert health.health_states(10.0)["backup"] == "healthy"


def test_a_stalled_provider_fails_over_at_the_deadline_from_the_segment_end() -> None:
    scheduler = TestScheduler()
    segment = _segment(scheduler, finish_at=T0 + 10)
    stalled: list[SttRequest] = []
    backup: list[SttRequest] = []
    router, _ = _router(
        {
            "stalls": _cold(scheduler, stalled, on_next(1, SttInterim("so"))),
            "backup": _cold(scheduler, backup, on_next(1, SttFinal("so it goes")), on_completed(1)),
        }
    )
    results = scheduler.start(lambda: router.transcribe(segment, None, interim=False))
    assert values(results.messages) == [
        (
            T0 + 13,
            SegmentTranscript(
                3, "so it goes", True, 1000, 1600, ModelInfo("backup", "fake", "fake-backup")
            ),
        )
    ]
    assert results.messages[-1] == on_completed(T0 + 13)


def test_an_attempt_without_a_final_fails_and_all_failing_is_an_error() -> None:
    scheduler = TestScheduler()
    segment = _segment(scheduler, finish_at=T0 + 1)
    unused: list[SttRequest] = []
    router, _ = _router(
        {
            "empty": _cold(scheduler, unused, on_next(1, SttInterim("x")), on_completed(2)),
            "broken": _cold(
                scheduler, unused, on_error(1, ProviderError(ErrorCategory.TRANSIENT, "500"))
            ),
        }
    )
    results = scheduler.start(lambda: router.transcribe(segment, None, interim=False))
    error = results.messages[-1].value.exception
    assert isinstance(error, AllModelsUnavailable)
    assert "ended with no final transcript" in str(error) and "500" in str(error)


def test_everything_committed_needs_no_more_audio() -> None:
    scheduler = TestScheduler()
    segment = _segment(scheduler, finish_at=T0 + 1)
    calls: list[SttRequest] = []
    router, _ = _router(
        {
            "commits_all": _cold(
                scheduler,
                calls,
                on_next(2, SttCommitted("every word", 1000)),
                on_error(3, ProviderError(ErrorCategory.TRANSIENT, "dropped")),
            ),
            "unused": _cold(scheduler, calls, on_next(1, SttFinal("never")), on_completed(1)),
        }
    )
    results = scheduler.start(lambda: router.transcribe(segment, None, interim=False))
    assert [v.text for _, v in values(results.messages)] == ["every word"]
    assert len(calls) == 1


# ---- intake and live segments -------------------------------------------------------


def test_audio_intake_cuts_exactly_at_the_limit_and_notices_late_audio() -> None:
    frames = FrameFactory("r1", "speech", None, lambda: 0.0)
    request = ListenRequestIn.model_validate({"format": {"sample_rate": 16000}})
    decoder = open_decoder(InputFormat("pcm_s16le", 16000, 1), 16000)
    state = IntakeState()
    inputs: Subject[ClientMessage] = Subject()
    items: list[Any] = []
    inputs.pipe(audio_intake(decoder, request, frames, 1000, state)).subscribe(items.append)
    for _ in range(3):
        inputs.on_next(ClientMessage("r1", "audio", {}, audio=b"\x01\x00" * 401))
    inputs.on_next(ClientMessage("r1", "audio", {}, audio=b"\x01\x00"))
    assert [len(i) for i in items[:3]] == [802, 802, 396]
    assert items[3] == EndOfAudio(limit_hit=True)
    assert isinstance(items[4], Frame) and items[4].data["error"]["name"] == "audio_after_end"
    assert len(items) == 5 and state.samples == 1000 and state.audio_ms() == 62


def test_audio_intake_rejects_a_format_change_but_tolerates_a_repeat() -> None:
    frames = FrameFactory("r1", "speech", None, lambda: 0.0)
    body = {"format": {"sample_rate": 16000}}
    request = ListenRequestIn.model_validate(body)
    decoder = open_decoder(InputFormat("pcm_s16le", 16000, 1), 16000)
    inputs: Subject[ClientMessage] = Subject()
    items: list[Any] = []
    errors: list[Exception] = []
    inputs.pipe(audio_intake(decoder, request, frames, 10**6, IntakeState())).subscribe(
        items.append, errors.append
    )
    inputs.on_next(ClientMessage("r1", "listen", body))
    assert items[0].data["error"]["name"] == "duplicate_request_id"
    assert "finish_reason" not in items[0].data["error"]
    inputs.on_next(ClientMessage("r1", "listen", {"format": {"sample_rate": 48000}}))
    assert getattr(errors[0], "name", None) == "format_changed"


def test_live_segments_fills_and_finishes_each_segment() -> None:
    events: Subject[Any] = Subject()
    segments: list[SegmentAudio] = []
    errors: list[Exception] = []
    events.pipe(live_segments(16000)).subscribe(segments.append, errors.append)
    events.on_next(SpeechStarted(0, 100, 0))
    events.on_next(SpeechAudio(0, b"ab"))
    assert segments[0].read() == b"ab" and not segments[0].finished
    events.on_next(SpeechAudio(0, b"cd"))
    events.on_next(SpeechEnded(0, 300, 600))
    assert segments[0].read() == b"abcd" and segments[0].end_ms == 300
    events.on_next(SpeechStarted(1, 900, 800))
    boom = RuntimeError("intake failed")
    events.on_error(boom)
    assert segments[1].error is boom
    assert errors == [boom]


# ---- hear (speech in) --------------------------------------------------------------


def test_hear_gives_boundaries_at_once_and_transcripts_in_segment_order() -> None:
    scheduler = TestScheduler()
    requests: list[SttRequest] = []
    # 20 ms frames arrive every half tick. Segment 0's final comes 3.5 ticks after
    # its attempt starts, segment 1's after 0.5: segment 1's final waits for 0's.
    slow = _cold(scheduler, requests, on_next(3.5, SttFinal("first")), on_completed(3.5))
    fast = _cold(scheduler, [], on_next(0.5, SttFinal("second")), on_completed(0.5))

    def transcriber(request: SttRequest) -> Observable[SttEvent]:
        return (slow if request.audio.segment_id == 0 else fast)(request)

    router, _ = _router({"a": transcriber})
    settings = VadSettings(
        mode=2, frame_ms=20, min_speech_ms=40, hangover_ms=60, preroll_ms=0, max_segment_ms=15_000
    )
    speech = b"\x01\x00" * 320
    quiet = b"\x00\x00" * 320
    pattern = "ss...ss..."
    pcm = scheduler.create_hot_observable(
        *[on_next(T0 + 1 + i / 2, speech if c == "s" else quiet) for i, c in enumerate(pattern)]
    )

    def nonzero(frame: bytes) -> bool:
        return any(frame)

    results = scheduler.start(
        lambda: pcm.pipe(hear(router, settings, None, False, classify=nonzero)), disposed=100
    )
    got: list[tuple[float, str]] = []
    for m in results.messages:
        assert m.value.kind == "N", getattr(m.value, "exception", None)
        v = m.value.value
        if isinstance(v, SpeechStarted):
            got.append((m.time, f"started {v.segment_id} at {v.start_ms} ms"))
        elif isinstance(v, SpeechEnded):
            got.append((m.time, f"ended {v.segment_id} at {v.end_ms} ms"))
        elif isinstance(v, Transcribed):
            assert isinstance(v.item, SegmentTranscript)
            got.append((m.time, f"{v.segment_id}: {v.item.text}"))
    assert got == [
        (T0 + 1.5, "started 0 at 0 ms"),
        (T0 + 3, "ended 0 at 40 ms"),
        (T0 + 4, "started 1 at 100 ms"),
        (T0 + 5, "0: first"),
        (T0 + 5, "1: second"),
        (T0 + 5.5, "ended 1 at 140 ms"),
    ]


def test_hear_ends_with_the_error_when_every_model_fails_a_segment() -> None:
    scheduler = TestScheduler()
    boom = ProviderError(ErrorCategory.TRANSIENT, "HTTP 500", status=500)
    router, _ = _router({"a": _cold(scheduler, [], on_error(1, boom))})
    settings = VadSettings(
        mode=2, frame_ms=20, min_speech_ms=40, hangover_ms=60, preroll_ms=0, max_segment_ms=15_000
    )
    pcm = scheduler.create_hot_observable(
        *[on_next(T0 + 1 + i, b"\x01\x00" * 320) for i in range(3)]
    )
    results = scheduler.start(
        lambda: pcm.pipe(hear(router, settings, None, False, classify=any)), disposed=100
    )
    assert isinstance(results.messages[0].value.value, SpeechStarted)
    last = results.messages[-1]
    assert last.time == T0 + 3 and last.value.kind == "E"
    assert isinstance(last.value.exception, AllModelsUnavailable)
