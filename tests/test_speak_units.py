"""speak units: sentence splitting, encoding, and the speak operators in virtual time."""

from __future__ import annotations

import io
import random
import struct
from typing import Any

import numpy as np
import pytest
import reactivex
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import Observable
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

from audio.encode import check_format, make_encoder, wav_header
from audio.sentences import SentenceSplitter, TextPiece, split_sentences
from config.models import SpeakSection, SpeechRouterConfig
from operators.resample import resample_chunks
from operators.scheduling import seconds
from pipelines.speak import speak_request
from pipelines.speak_router import SpeakRouter
from protocol.frames import Frame
from protocol.messages import ClientMessage
from protocol.speak import Refusal, SpeakSpec, parse_speak
from providers.tts_types import PcmChunk, SampleCarry, SpeechRequest
from providers.types import ErrorCategory, ProviderError
from routing.router import ModelRouter
from routing.strategies import PriorityStrategy
from tests.speak_helpers import decode, rms

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe
T0 = ReactiveTest.subscribed  # 200: TestScheduler.start subscribes here; 1 tick = 1 second

BOOM = ProviderError(ErrorCategory.TRANSIENT, "HTTP 500", status=500)


# ---- sentences ----------------------------------------------------------------------


def _texts(text: str, max_chars: int = 250) -> list[str]:
    splitter = SentenceSplitter(max_chars)
    return [s.text for s in splitter.push(text) + splitter.finish()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello world. How are you? Fine!", ["Hello world.", "How are you?", "Fine!"]),
        ("Dr. Smith met Mrs. Jones, e.g. at 3 p.m. today.", None),
        ("Pi is 3.14159 and e is 2.718. Next.", ["Pi is 3.14159 and e is 2.718.", "Next."]),
        (
            "See https://example.com/a.b?c=1&d=2.5 or www.x.org/y. Then go.",
            ["See https://example.com/a.b?c=1&d=2.5 or www.x.org/y.", "Then go."],
        ),
        ("J. K. Rowling wrote it. The end.", ["J. K. Rowling wrote it.", "The end."]),
        ("Wait... what?! Really.", ["Wait...", "what?!", "Really."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("First para\n\nSecond para", ["First para", "Second para"]),
        ("line one\nline two.", ["line one\nline two."]),
        ("\u4f60\u597d\u3002\u518d\u89c1\uff01", ["\u4f60\u597d\u3002", "\u518d\u89c1\uff01"]),
        ("Hello. ... . Bye.", ["Hello.", "Bye."]),
        ("   ", []),
    ],
)
def test_sentence_rules(text: str, expected: list[str] | None) -> None:
    assert _texts(text) == (expected if expected is not None else [text])


def test_a_long_run_is_cut_at_a_clause_mark_then_a_space_then_hard() -> None:
    clause = "alpha beta gamma delta, epsilon zeta eta theta iota kappa"
    assert _texts(clause, max_chars=40) == [
        "alpha beta gamma delta,",
        "epsilon zeta eta theta iota kappa",
    ]
    words = "one two three four five six seven eight nine ten"
    assert all(len(t) <= 20 for t in _texts(words, max_chars=20))
    assert _texts("x" * 45, max_chars=20) == ["x" * 20, "x" * 20, "x" * 5]


def test_without_eager_cuts_a_sentence_waits_for_the_next_character() -> None:
    splitter = SentenceSplitter(at_chunk_end=False)
    assert splitter.push("Hello there.") == []  # "." might be "..." or "Dr."
    [first] = splitter.push(" Next")
    assert (first.index, first.text, first.start_char, first.end_char) == (0, "Hello there.", 0, 12)
    assert splitter.push(" Dr.") == []
    assert splitter.push(" Who") == []  # an abbreviation: no split
    [second] = splitter.finish()
    assert second.text == "Next Dr. Who" and second.start_char == 13


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        # a terminator that ends a piece ends the sentence at once
        (["It is noon.", " Anything else?"], [["It is noon."], ["Anything else?"]]),
        (["Really?", "!", " Yes."], [["Really?"], [], ["Yes."]]),  # the "!" is dropped
        (['He said "stop."', " Then"], [['He said "stop."'], []]),
        (["Wait...", " what"], [["Wait..."], []]),
        (["\u4f60\u597d\u3002"], [["\u4f60\u597d\u3002"]]),
        # ...unless what follows may still change it
        (["Ask Dr.", " Who."], [[], ["Ask Dr. Who."]]),
        (["Use e.g.", " this."], [[], ["Use e.g. this."]]),
        (["J.", " K. Rowling."], [[], ["J. K. Rowling."]]),
        (["Pi is 3.", "14 today."], [[], ["Pi is 3.14 today."]]),
        (["Hmm..", ". Yes."], [[], ["Hmm...", "Yes."]]),
        (["www.x.org/y.", " Go"], [["www.x.org/y."], []]),
        ([" ...", " Go"], [[], []]),  # nothing speakable yet
    ],
)
def test_a_terminator_at_a_pieces_end_emits_unless_it_may_continue(
    pieces: list[str], expected: list[list[str]]
) -> None:
    splitter = SentenceSplitter()
    assert [[s.text for s in splitter.push(p)] for p in pieces] == expected


def test_offsets_stay_exact_across_dropped_continuations() -> None:
    splitter = SentenceSplitter()
    pieces = ["Why?", "!!", " Because."]
    got = [s for p in pieces for s in splitter.push(p)] + splitter.finish()
    whole = "".join(pieces)
    assert [(s.index, s.text) for s in got] == [(0, "Why?"), (1, "Because.")]
    assert all(whole[s.start_char : s.end_char] == s.text for s in got)


_CLOSER_CHARS = "\"')]}\u201d\u2019\u00bb"
_ENDS = set(".!?\u2026\u3002\uff01\uff1f" + _CLOSER_CHARS)


def _stream(splitter: SentenceSplitter, text: str, points: list[int]) -> list[Any]:
    got = []
    last = 0
    for cut in points:
        got += splitter.push(text[last:cut])
        last = cut
    return got + splitter.push(text[last:]) + splitter.finish()


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab .,!?\n3xyz")), max_size=300),
    st.lists(st.integers(min_value=0, max_value=300), max_size=20),
    st.integers(min_value=5, max_value=60),
)
def test_streaming_splits_like_the_whole_text(text: str, cuts: list[int], max_chars: int) -> None:
    # pieces that do not end right after a terminator or closer split as the whole does
    whole = SentenceSplitter(max_chars)
    expected = whole.push(text) + whole.finish()
    points = sorted(c for c in cuts if c <= len(text) and (c == 0 or text[c - 1] not in _ENDS))
    got = _stream(SentenceSplitter(max_chars), text, points)
    assert got == expected
    for sentence in got:
        assert text[sentence.start_char : sentence.end_char] == sentence.text
        assert len(sentence.text) <= max_chars
        assert sentence.text == sentence.text.strip() and sentence.text
    assert [s.index for s in got] == list(range(len(got)))


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab .!?\n3xy")), max_size=200),
    st.lists(st.integers(min_value=0, max_value=200), max_size=20),
)
def test_eager_cuts_fall_only_at_piece_ends(text: str, cuts: list[int]) -> None:
    whole = SentenceSplitter(1000, at_chunk_end=False)
    boundaries = {s.end_char for s in whole.push(text) + whole.finish()}
    points = sorted({c for c in cuts if c <= len(text)})
    got = _stream(SentenceSplitter(1000), text, points)
    for sentence in got:
        assert text[sentence.start_char : sentence.end_char] == sentence.text
        assert sentence.text == sentence.text.strip() and sentence.text
        assert sentence.end_char in boundaries or sentence.end_char in points
    spoken = "".join(s.text for s in got).replace(" ", "").replace("\n", "")
    expected = "".join(text.split())
    assert [ch for ch in spoken if ch.isalnum()] == [ch for ch in expected if ch.isalnum()]
    assert [s.index for s in got] == list(range(len(got)))


def test_split_sentences_operator_in_virtual_time() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, TextPiece("Hi. Th")),
        on_next(3, TextPiece("ere is more")),
        on_next(5, TextPiece(". Last", final=True)),
        on_next(6, TextPiece("ignored")),
    )
    results = scheduler.start(lambda: source.pipe(split_sentences()))
    got = [(m.time - T0, m.value.value.text) for m in results.messages if m.value.kind == "N"]
    assert got == [(1, "Hi."), (5, "There is more."), (5, "Last")]
    assert results.messages[-1] == on_completed(T0 + 5)
    assert source.subscriptions == [subscribe(T0, T0 + 5)]


def test_a_sentence_leaves_with_the_piece_that_ends_it_in_virtual_time() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, TextPiece("It is noon.")),
        on_next(4, TextPiece(" Ask Dr.")),
        on_next(6, TextPiece(" Who.")),
        on_next(9, TextPiece("", final=True)),
    )
    results = scheduler.start(lambda: source.pipe(split_sentences()))
    got = [(m.time - T0, m.value.value.text) for m in results.messages if m.value.kind == "N"]
    assert got == [(1, "It is noon."), (6, "Ask Dr. Who.")]
    assert results.messages[-1] == on_completed(T0 + 9)


def test_split_sentences_flushes_on_completion_and_passes_errors() -> None:
    scheduler = TestScheduler()
    ended = scheduler.create_cold_observable(on_next(1, TextPiece("No dot")), on_completed(2))
    results = scheduler.start(lambda: ended.pipe(split_sentences()))
    assert [m.value.value.text for m in results.messages[:-1]] == ["No dot"]
    assert results.messages[-1] == on_completed(T0 + 2)
    scheduler = TestScheduler()
    error = RuntimeError("socket gone")
    broken = scheduler.create_cold_observable(on_next(1, TextPiece("One. Two")), on_error(2, error))
    results = scheduler.start(lambda: broken.pipe(split_sentences()))
    assert [m.value.kind for m in results.messages] == ["N", "E"]
    assert results.messages[-1] == on_error(T0 + 2, error)


# ---- encoding --------------------------------------------------------------------------


def _tone(seconds_: float, rate: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = np.arange(int(seconds_ * rate)) / rate
    return (np.sin(2 * np.pi * 330 * t) * 6000).astype(np.int16)


@pytest.mark.parametrize(
    ("encoding", "rate", "channels"),
    [
        ("wav", 16000, 1),
        ("wav", 44100, 2),
        ("flac", 22050, 1),
        ("flac", 48000, 2),
        ("ogg_opus", 16000, 1),
        ("ogg_opus", 48000, 2),
        ("mp3", 24000, 1),
        ("mp3", 44100, 2),
    ],
)
def test_streamed_encodings_decode_to_the_same_audio_length(
    encoding: str, rate: int, channels: int
) -> None:
    pcm = _tone(1.5, rate)
    encoder = make_encoder(encoding, rate, channels)
    out = b"".join(encoder.write(pcm[i : i + rate // 10]) for i in range(0, pcm.size, rate // 10))
    out += encoder.close()
    assert encoder.close() == b""
    samples, got_rate, got_channels = decode(out)
    assert (got_rate, got_channels) == (rate, channels)
    seconds_ = samples.size / channels / rate
    assert 1.4 < seconds_ < 1.7
    assert rms(samples) > 1000


def test_pcm_and_wav_bytes_are_the_samples() -> None:
    pcm = _tone(0.1, 8000)
    raw = make_encoder("pcm_s16le", 8000)
    assert raw.write(pcm) == pcm.astype("<i2").tobytes()
    wav = make_encoder("wav", 8000, 2)
    first = wav.write(pcm[:10])
    assert first[:44] == wav_header(8000, 2) and len(first) == 44 + 10 * 4
    assert struct.unpack("<I", first[4:8])[0] == 0xFFFFFFFF
    assert wav.write(pcm[10:20]) == np.repeat(pcm[10:20], 2).astype("<i2").tobytes()
    with sf.SoundFile(io.BytesIO(first)) as f:
        assert (f.samplerate, f.channels) == (8000, 2)


@pytest.mark.parametrize(
    ("encoding", "rate", "problem"),
    [
        ("aiff", 16000, "unknown encoding"),
        ("ogg_opus", 22050, "ogg_opus supports"),
        ("ogg_opus", 44100, "ogg_opus supports"),
        ("mp3", 9000, "mp3 supports"),
        ("wav", 7999, "between 8000 and 48000"),
        ("pcm_s16le", 96000, "between 8000 and 48000"),
    ],
)
def test_check_format_names_the_problem(encoding: str, rate: int, problem: str) -> None:
    message = check_format(encoding, rate)
    assert message is not None and problem in message
    with pytest.raises(ValueError, match=problem):
        make_encoder(encoding, rate)


def test_check_format_accepts_what_it_can_encode() -> None:
    for encoding in ("pcm_s16le", "wav", "flac"):
        assert check_format(encoding, 11025) is None
    assert check_format("ogg_opus", 12000) is None
    assert check_format("mp3", 11025, 2) is None
    assert check_format("wav", 16000, 3) == "channels must be 1 or 2, not 3"


def test_sample_carry_realigns_odd_chunks() -> None:
    carry = SampleCarry()
    assert carry.push(b"\x01\x02\x03") == b"\x01\x02"
    assert carry.pending == 1
    assert carry.push(b"\x04") == b"\x03\x04"
    assert carry.pending == 0


# ---- parse_speak -------------------------------------------------------------------------


SECTION = SpeakSection.model_validate({"models": [{"id": "a", "local": {}}], "max_text_chars": 50})


def test_parse_speak_merges_the_default_format() -> None:
    spec = parse_speak({"text": "Hi.", "format": {"encoding": "ogg_opus"}, "final": True}, SECTION)
    assert isinstance(spec, SpeakSpec)
    assert (spec.format.encoding, spec.format.sample_rate) == ("ogg_opus", 24000)
    assert parse_speak({}, SECTION) == SpeakSpec(SECTION.format, None, "", False)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"text": "x", "format": {"encoding": "aiff"}}, "unsupported_format"),
        ({"text": "x", "format": {"sample_rate": 100}}, "unsupported_format"),
        ({"text": "x", "format": "mp3"}, "unsupported_format"),
        ({"final": True}, "invalid_request"),
        ({"text": "   ", "final": True}, "invalid_request"),
        ({"text": 3}, "invalid_request"),
        ({"text": "x", "final": "yes"}, "invalid_request"),
        ({"text": "x", "voice": 5}, "invalid_request"),
        ({"text": "x" * 51}, "text_too_long"),
    ],
)
def test_parse_speak_refuses_with_a_typed_name(body: dict[str, Any], name: str) -> None:
    refusal = parse_speak(body, SECTION)
    assert isinstance(refusal, Refusal) and refusal.name == name


# ---- operators ----------------------------------------------------------------------------


def _chunk(ms: float, rate: int = 24000, value: int = 1000) -> PcmChunk:
    return PcmChunk(np.full(int(rate * ms / 1000), value, dtype=np.int16), rate)


def test_resample_chunks_converts_and_flushes_the_tail() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(1, _chunk(100, 22050)), on_next(2, _chunk(100, 22050)), on_completed(3)
    )
    results = scheduler.start(lambda: source.pipe(resample_chunks(24000)))
    times = [m.time - T0 for m in results.messages if m.value.kind == "N"]
    assert times[0] == 1 and times[-1] == 3  # the filter's tail comes at completion
    total = sum(m.value.value.size for m in results.messages if m.value.kind == "N")
    assert total == 4800  # 200 ms at 24 kHz
    assert results.messages[-1] == on_completed(T0 + 3)


def test_resample_chunks_passes_errors_and_same_rate_untouched() -> None:
    scheduler = TestScheduler()
    chunk = _chunk(10)
    source = scheduler.create_cold_observable(on_next(1, chunk), on_error(2, BOOM))
    results = scheduler.start(lambda: source.pipe(resample_chunks(24000)))
    assert results.messages[0].value.value is chunk.samples
    assert results.messages[1] == on_error(T0 + 2, BOOM)


# ---- a whole request in virtual time --------------------------------------------------------


def _router(
    scheduler: TestScheduler,
    sources: dict[tuple[str, str], Observable[PcmChunk]],
    *model_ids: str,
    fmt: dict[str, Any] | None = None,
    **speak: Any,
) -> tuple[SpeakRouter, ModelRouter]:
    client = {"first_chunk_timeout": 3, "idle_timeout": 2, "timeout": 60}
    config = SpeechRouterConfig.model_validate(
        {
            "id": "s",
            "retry": {"max_retries": 0},
            "speak": {
                "models": [{"id": m, "local": {}, "client": client} for m in model_ids],
                "format": fmt or {"encoding": "pcm_s16le", "sample_rate": 24000},
                **speak,
            },
        }
    )
    assert config.speak is not None
    health = ModelRouter("s", config.speak.models, PriorityStrategy(), now=0.0)
    requests: list[SpeechRequest] = []

    def source(model_id: str, request: SpeechRequest) -> Observable[PcmChunk]:
        requests.append(request)
        return sources[(model_id, request.text)]

    router = SpeakRouter(config, {}, health, random.Random(0), scheduler, source=source)
    return router, health


def _run(
    scheduler: TestScheduler,
    router: SpeakRouter,
    body: dict[str, Any],
    later: Observable[ClientMessage] | None = None,
    disposed: int = 1000,
    max_lead: float = 10.0,
) -> list[tuple[int, str, Any]]:
    first = ClientMessage("r1", "speak", body)
    inbound: Observable[ClientMessage] = later if later is not None else Subject()

    def create() -> Observable[Frame]:
        return speak_request(router, first, inbound, lambda: seconds(scheduler), max_lead=max_lead)

    results = scheduler.start(create, disposed=disposed)
    return _summary(results.messages)


def _summary(messages: list[Recorded[Any]]) -> list[tuple[int, str, Any]]:
    """(tick after subscription, kind, detail) per frame."""
    out: list[tuple[int, str, Any]] = []
    for message in messages:
        if message.value.kind != "N":
            continue
        frame: Frame = message.value.value
        at = int(message.time - T0)
        if isinstance(frame.data, bytes):
            out.append((at, "audio", len(frame.data)))
        elif frame.data["type"] == "error":
            out.append((at, frame.data["error"]["name"], frame.data["error"]))
        else:
            out.append((at, frame.data["type"], frame.data))
    return out


def test_a_request_streams_audio_then_segments_then_done() -> None:
    scheduler = TestScheduler()
    sources = {
        ("a", "One."): scheduler.create_cold_observable(
            on_next(1, _chunk(100)), on_next(2, _chunk(100)), on_completed(3)
        ),
        ("a", "Two."): scheduler.create_cold_observable(on_next(1, _chunk(50)), on_completed(2)),
    }
    router, _ = _router(scheduler, sources, "a")
    frames = _run(scheduler, router, {"text": "One. Two.", "final": True})
    assert [(t, k) for t, k, _ in frames] == [
        (1, "audio"),
        (2, "audio"),
        (3, "segment"),
        (4, "audio"),
        (5, "segment"),
        (5, "done"),
    ]
    assert [d for _, k, d in frames if k == "audio"] == [4800, 4800, 2400]
    segment = frames[2][2]["segment"]
    assert segment == {
        "segment_id": 0,
        "text": "One.",
        "start_char": 0,
        "end_char": 4,
        "provider_id": "local",
        "model_id": "a",
        "audio_ms": 200,
        "audio_bytes": 9600,
    }
    done = frames[-1][2]
    assert done["finish_reason"] == "complete"
    assert done["usage"] == {"characters": 9, "audio_ms": 250}
    assert done["time_to_first_audio_ms"] == 1000  # first audio one virtual second in
    assert done["segments"] == 2


def test_a_mid_sentence_failure_drops_that_segment_and_sticks_to_the_next_model() -> None:
    scheduler = TestScheduler()
    a_two = scheduler.create_cold_observable(on_next(1, _chunk(10)), on_completed(2))
    sources = {
        ("a", "One."): scheduler.create_cold_observable(on_next(1, _chunk(100)), on_error(2, BOOM)),
        ("b", "One."): scheduler.create_cold_observable(on_next(1, _chunk(50)), on_completed(2)),
        ("a", "Two."): a_two,
        ("b", "Two."): scheduler.create_cold_observable(on_next(1, _chunk(20)), on_completed(2)),
    }
    router, health = _router(scheduler, sources, "a", "b")
    frames = _run(scheduler, router, {"text": "One. Two.", "final": True})
    assert [(t, k) for t, k, _ in frames] == [
        (1, "audio"),
        (2, "model_unavailable"),
        (3, "audio"),
        (4, "segment"),
        (5, "audio"),
        (6, "segment"),
        (6, "done"),
    ]
    notice = frames[1][2]
    assert notice["segment_id"] == 0 and notice["model_id"] == "a"
    assert notice["drop_bytes"] == 4800 and "finish_reason" not in notice
    segments = [d["segment"] for _, k, d in frames if k == "segment"]
    assert [(s["segment_id"], s["model_id"], s["audio_bytes"]) for s in segments] == [
        (0, "b", 2400),
        (1, "b", 960),
    ]
    assert a_two.subscriptions == []  # the failed model is not asked for the rest
    assert health.health_states(0.0) == {"a": "healthy", "b": "healthy"}


def test_a_silent_provider_fails_over_at_the_first_audio_deadline() -> None:
    scheduler = TestScheduler()
    silent = scheduler.create_cold_observable(on_next(100, _chunk(10)))
    sources = {
        ("a", "One."): silent,
        ("b", "One."): scheduler.create_cold_observable(on_next(1, _chunk(10)), on_completed(2)),
    }
    router, _ = _router(scheduler, sources, "a", "b")
    frames = _run(scheduler, router, {"text": "One.", "final": True})
    assert [(t, k) for t, k, _ in frames] == [(4, "audio"), (5, "segment"), (5, "done")]
    assert silent.subscriptions == [subscribe(T0, T0 + 3)]


def test_zero_audio_is_a_failure_not_a_success() -> None:
    scheduler = TestScheduler()
    sources = {
        ("a", "One."): scheduler.create_cold_observable(on_next(1, _chunk(0)), on_completed(2)),
        ("b", "One."): scheduler.create_cold_observable(on_next(1, _chunk(10)), on_completed(2)),
    }
    router, _ = _router(scheduler, sources, "a", "b")
    frames = _run(scheduler, router, {"text": "One.", "final": True})
    assert [(t, k) for t, k, _ in frames] == [(3, "audio"), (4, "segment"), (4, "done")]
    assert frames[1][2]["segment"]["model_id"] == "b"


def test_every_model_failing_ends_with_all_models_unavailable() -> None:
    scheduler = TestScheduler()
    sources = {
        ("a", "One."): scheduler.create_cold_observable(on_error(1, BOOM)),
        ("b", "One."): scheduler.create_cold_observable(on_completed(1)),
    }
    router, _ = _router(scheduler, sources, "a", "b")
    frames = _run(scheduler, router, {"text": "One.", "final": True})
    assert [(t, k) for t, k, _ in frames] == [(2, "all_models_unavailable")]
    assert frames[0][2]["finish_reason"] == "error"


def test_cancel_disposes_the_provider_call_at_once() -> None:
    scheduler = TestScheduler()
    endless = scheduler.create_cold_observable(*[on_next(t, _chunk(10)) for t in range(1, 200)])
    router, _ = _router(scheduler, {("a", "Go on."): endless}, "a")
    later = scheduler.create_hot_observable(
        on_next(T0 + 5, ClientMessage("r1", "cancel", {"type": "cancel"}))
    )
    frames = _run(scheduler, router, {"text": "Go on.", "final": True}, later)
    assert [k for _, k, _ in frames] == ["audio"] * 4 + ["cancelled"]
    assert frames[-1][0] == 5
    assert endless.subscriptions == [subscribe(T0, T0 + 5)]


def test_streamed_text_starts_the_first_sentence_before_the_rest_arrives() -> None:
    scheduler = TestScheduler()
    first = scheduler.create_cold_observable(on_next(1, _chunk(10)), on_completed(2))
    second = scheduler.create_cold_observable(on_next(1, _chunk(10)), on_completed(2))
    router, _ = _router(scheduler, {("a", "Hello world."): first, ("a", "And more."): second}, "a")
    later = scheduler.create_hot_observable(
        on_next(T0 + 10, ClientMessage("r1", "text", {"text": " world. And"})),
        on_next(T0 + 30, ClientMessage("r1", "speak", {"text": "dup"})),
        on_next(T0 + 40, ClientMessage("r1", "text", {"text": " more.", "final": True})),
        on_next(T0 + 41, ClientMessage("r1", "text", {"text": "late"})),
    )
    frames = _run(scheduler, router, {"text": "Hello"}, later)
    assert first.subscriptions[0].subscribe == T0 + 10  # long before the final text at 40
    assert [(t, k) for t, k, _ in frames] == [
        (11, "audio"),
        (12, "segment"),
        (30, "duplicate_request_id"),
        (41, "invalid_request"),  # text after final: a notice, the request goes on
        (41, "audio"),
        (42, "segment"),
        (42, "done"),
    ]
    assert "finish_reason" not in frames[3][2]
    assert frames[-1][2]["usage"]["characters"] == len("Hello world. And more.")


def test_streamed_text_past_the_limit_ends_the_request() -> None:
    scheduler = TestScheduler()
    router, _ = _router(scheduler, {}, "a", max_text_chars=20)
    later = scheduler.create_hot_observable(
        on_next(T0 + 5, ClientMessage("r1", "text", {"text": "words " * 3})),
        on_next(T0 + 6, ClientMessage("r1", "audio", {})),
    )
    frames = _run(scheduler, router, {"text": "No end"}, later)
    assert [(t, k) for t, k, _ in frames] == [(5, "text_too_long")]
    assert frames[0][2]["finish_reason"] == "error"


def test_audio_runs_at_most_max_lead_ahead_of_real_time() -> None:
    scheduler = TestScheduler()
    sources = {
        ("a", f"S{i}."): scheduler.create_cold_observable(
            on_next(1, _chunk(10_000)), on_completed(2)
        )
        for i in range(3)
    }
    router, _ = _router(scheduler, sources, "a")
    _run(scheduler, router, {"text": "S0. S1. S2.", "final": True})
    starts = [sources[("a", f"S{i}.")].subscriptions[0].subscribe - T0 for i in range(3)]
    # 20 s of audio by t=4, first audio at t=1: 20 - 3 = 17 s ahead; wait 7 s
    assert starts == [0, 2, 11]


def test_compressed_formats_never_send_a_failed_attempt() -> None:
    scheduler = TestScheduler()
    sources = {
        ("a", "One."): scheduler.create_cold_observable(on_next(1, _chunk(300)), on_error(2, BOOM)),
        ("b", "One."): scheduler.create_cold_observable(
            on_next(1, _chunk(300, value=3000)), on_completed(2)
        ),
    }
    router, _ = _router(
        scheduler, sources, "a", "b", fmt={"encoding": "flac", "sample_rate": 24000}
    )
    frames = _run(scheduler, router, {"text": "One.", "final": True})
    kinds = [(t, k) for t, k, _ in frames]
    assert kinds[0] == (2, "model_unavailable") and frames[0][2]["drop_bytes"] == 0
    assert kinds[1] == (4, "audio")  # encoded when the segment is complete
    assert kinds[-1] == (4, "done")
    audio = b"".join(b"x" * d for _, k, d in frames if k == "audio")
    assert len(audio) > 0


def test_a_wav_header_is_never_part_of_a_dropped_segment() -> None:
    scheduler = TestScheduler()
    sources = {
        ("a", "One."): scheduler.create_cold_observable(on_next(1, _chunk(100)), on_error(2, BOOM)),
        ("b", "One."): scheduler.create_cold_observable(on_next(1, _chunk(100)), on_completed(2)),
    }
    router, _ = _router(scheduler, sources, "a", "b", fmt={"encoding": "wav", "sample_rate": 24000})
    frames = _run(scheduler, router, {"text": "One.", "final": True})
    assert frames[0] == (1, "audio", 44 + 4800)
    assert frames[1][2]["drop_bytes"] == 4800
    assert frames[2] == (3, "audio", 4800)
    assert frames[3][2]["segment"]["audio_bytes"] == 4800


@pytest.mark.parametrize(
    ("first_type", "body", "name"),
    [
        ("text", {"text": "hi"}, "request_not_found"),
        ("listen", {}, "unsupported_message_type"),
        ("speak", {"text": "x", "format": {"encoding": "ogg_opus", "sample_rate": 44100}}, None),
    ],
)
def test_a_bad_first_message_gets_one_terminal_error(
    first_type: str, body: dict[str, Any], name: str | None
) -> None:
    scheduler = TestScheduler()
    router, _ = _router(scheduler, {}, "a")
    first = ClientMessage("r1", first_type, body)
    results = scheduler.start(lambda: speak_request(router, first, reactivex.never(), lambda: 0.0))
    frames = _summary(results.messages)
    assert len(frames) == 1
    assert frames[0][1] == (name or "unsupported_format")
    assert frames[0][2]["finish_reason"] == "error"
