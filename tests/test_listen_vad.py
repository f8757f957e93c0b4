"""VAD segmentation in virtual time: exact segment boundaries in ms, from sample counts.

Most tests use a deterministic classifier (a frame is speech when any sample is
non-zero) so every boundary is exact; one runs real webrtcvad on espeak speech.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler

from config.models import VADConfig
from operators.vad import (
    Segment,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
    VadEvent,
    VadOverrideError,
    VadSettings,
    resolve_vad,
    vad_segments,
    whole_segments,
)
from tests.speech_audio import silence, speech_16k, synthesize

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
T0 = ReactiveTest.subscribed
RATE = 16000
FRAME = 320  # samples in 20 ms


def nonzero(frame: bytes) -> bool:
    return any(frame)


def frames_of(pattern: str, frame_samples: int = FRAME) -> list[bytes]:
    """One 20 ms frame per character: 's' speech (a constant 1000), '.' silence."""
    out = []
    for char in pattern:
        value = 1000 if char == "s" else 0
        out.append(np.full(frame_samples, value, dtype=np.int16).tobytes())
    return out


SETTINGS = VadSettings(
    mode=2, frame_ms=20, min_speech_ms=40, hangover_ms=60, preroll_ms=20, max_segment_ms=15_000
)


def run(chunks: list[bytes], settings: VadSettings = SETTINGS) -> list[Any]:
    """Feed chunk i at virtual time 300 + i; return the recorded messages."""
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        *[on_next(300 + i, chunk) for i, chunk in enumerate(chunks)],
        on_completed(300 + len(chunks)),
    )
    results = scheduler.start(lambda: source.pipe(vad_segments(settings, RATE, classify=nonzero)))
    return list(results.messages)


def test_a_segment_starts_after_min_speech_and_ends_after_the_hangover() -> None:
    frames = frames_of("..sss....")
    messages = run(frames)
    assert messages == [
        on_next(303, SpeechStarted(0, start_ms=40, audio_start_ms=20)),
        on_next(303, SpeechAudio(0, frames[1] + frames[2] + frames[3])),
        on_next(304, SpeechAudio(0, frames[4])),
        on_next(305, SpeechAudio(0, frames[5])),
        on_next(306, SpeechAudio(0, frames[6])),
        on_next(307, SpeechAudio(0, frames[7])),
        on_next(307, SpeechEnded(0, end_ms=100, audio_end_ms=160)),
        on_completed(309),
    ]


def test_end_of_speech_is_the_last_loud_sample_and_the_hangover_counts_samples() -> None:
    # frame 4 holds 5 ms of speech, then silence: speech ends at 85 ms, and the
    # 60 ms hangover is complete inside frame 7 (145 ms), so frame 7 ends the segment
    # (a whole-frame count from frame 4's end would have waited for frame 8)
    frames = frames_of("..sss.....")
    partial = np.zeros(FRAME, dtype=np.int16)
    partial[:80] = 1000
    frames[4] = partial.tobytes()
    boundaries = [
        (m.time, m.value.value)
        for m in run(frames)
        if m.value.kind == "N" and not isinstance(m.value.value, SpeechAudio)
    ]
    assert boundaries == [
        (303, SpeechStarted(0, start_ms=40, audio_start_ms=20)),
        (307, SpeechEnded(0, end_ms=85, audio_end_ms=160)),
    ]


def test_a_quiet_frame_is_not_speech_whatever_webrtcvad_says() -> None:
    # webrtcvad's built-in hangover calls the digital silence after speech "voiced";
    # the default classifier gates frames no louder than SILENCE_FLOOR off
    from operators.vad import SILENCE_FLOOR, webrtc_classifier

    classify = webrtc_classifier(2, RATE)
    tone = (8000 * np.sin(np.arange(FRAME * 10) * 2 * np.pi * 220 / RATE)).astype(np.int16)
    for k in range(10):
        classify(tone[k * FRAME : (k + 1) * FRAME].tobytes())
    faint = np.full(FRAME, SILENCE_FLOOR, dtype=np.int16)
    faint[::2] = -SILENCE_FLOOR
    assert classify(faint.tobytes()) is False
    assert classify(np.zeros(FRAME, dtype=np.int16).tobytes()) is False


def test_timing_comes_from_sample_counts_not_chunk_sizes_or_arrival_times() -> None:
    data = b"".join(frames_of("..sss...."))
    odd_chunks = [data[:1], data[1:1001], data[1001:1002], data[1002:3333], data[3333:]]
    events = [m.value.value for m in run(odd_chunks) if m.value.kind == "N"]
    boundaries = [e for e in events if not isinstance(e, SpeechAudio)]
    assert boundaries == [SpeechStarted(0, 40, 20), SpeechEnded(0, 100, 160)]
    audio = b"".join(e.pcm for e in events if isinstance(e, SpeechAudio))
    assert audio == data[640:5120]  # frames 1-7: pre-roll, speech, hangover


def test_a_blip_shorter_than_min_speech_is_not_speech() -> None:
    assert run(frames_of("...s.s..s...")) == [on_completed(312)]


def test_preroll_never_reaches_into_the_previous_segment() -> None:
    settings = VadSettings(frame_ms=20, min_speech_ms=40, hangover_ms=60, preroll_ms=200)
    events = [
        m.value.value for m in run(frames_of("sss...ss...."), settings) if m.value.kind == "N"
    ]
    boundaries = [e for e in events if isinstance(e, SpeechStarted | SpeechEnded)]
    assert boundaries == [
        SpeechStarted(0, start_ms=0, audio_start_ms=0),  # clamped to the stream start
        SpeechEnded(0, end_ms=60, audio_end_ms=120),
        SpeechStarted(1, start_ms=120, audio_start_ms=120),  # clamped to segment 0's end
        SpeechEnded(1, end_ms=160, audio_end_ms=220),
    ]


def test_max_segment_cuts_long_speech_without_losing_or_repeating_a_sample() -> None:
    settings = VadSettings(
        frame_ms=20, min_speech_ms=40, hangover_ms=60, preroll_ms=100, max_segment_ms=200
    )
    rng = np.random.default_rng(7)
    speech = rng.integers(1, 3000, size=25 * FRAME, dtype=np.int16).tobytes()
    scheduler = TestScheduler()
    chunks = [speech[i : i + 999] for i in range(0, len(speech), 999)]
    source = scheduler.create_hot_observable(
        *[on_next(300 + i, c) for i, c in enumerate(chunks)], on_completed(300 + len(chunks))
    )
    results = scheduler.start(
        lambda: source.pipe(vad_segments(settings, RATE, classify=nonzero), whole_segments(RATE))
    )
    segments: list[Segment] = [m.value.value for m in results.messages if m.value.kind == "N"]
    assert [(s.start_ms, s.end_ms, s.audio_start_ms, s.audio_end_ms) for s in segments] == [
        (0, 200, 0, 200),
        (200, 400, 200, 400),
        (400, 500, 400, 500),
    ]
    assert b"".join(s.pcm for s in segments) == speech


def test_the_end_of_input_closes_an_open_segment_with_its_partial_frame() -> None:
    frames = frames_of("..ssss")
    tail = np.full(50, 1000, dtype=np.int16).tobytes()  # 3.125 ms
    events = [m.value.value for m in run([*frames, tail]) if m.value.kind == "N"]
    assert events[-1] == SpeechEnded(0, end_ms=120, audio_end_ms=123)
    assert events[-2] == SpeechAudio(0, tail)


def test_an_error_passes_through_after_the_events_so_far() -> None:
    scheduler = TestScheduler()
    frames = frames_of("..ss")
    boom = RuntimeError("socket reader failed")
    source = scheduler.create_hot_observable(
        *[on_next(300 + i, f) for i, f in enumerate(frames)], on_error(310, boom)
    )
    results = scheduler.start(lambda: source.pipe(vad_segments(SETTINGS, RATE, classify=nonzero)))
    assert results.messages[0] == on_next(303, SpeechStarted(0, 40, 20))
    assert results.messages[-1] == on_error(310, boom)


def test_whole_segments_joins_the_audio_of_each_utterance() -> None:
    frames = frames_of("..sss.....ss....")
    segments: list[Segment] = []
    reactivex.from_iterable(frames).pipe(
        vad_segments(SETTINGS, RATE, classify=nonzero), whole_segments(RATE)
    ).subscribe(segments.append)
    assert [(s.segment_id, s.start_ms, s.end_ms) for s in segments] == [(0, 40, 100), (1, 200, 240)]
    assert segments[0].pcm == b"".join(frames[1:8])
    assert segments[1].pcm == b"".join(frames[9:15])


def test_bad_sample_rates_and_frames_fail_early() -> None:
    with pytest.raises(ValueError, match="webrtcvad takes"):
        vad_segments(VadSettings(), 22050)
    with pytest.raises(ValueError, match="whole number"):
        vad_segments(VadSettings(frame_ms=10), 11025, classify=nonzero)


def test_requests_override_vad_settings_within_limits() -> None:
    router = VADConfig(max_segment=10.0)
    assert resolve_vad(router, None) == VadSettings(max_segment_ms=10_000)
    tuned = resolve_vad(router, {"hangover": "500ms", "mode": 3, "frame_ms": 30})
    assert (tuned.hangover_ms, tuned.mode, tuned.frame_ms) == (500, 3, 30)
    with pytest.raises(VadOverrideError, match=r"vad.hangover must be between"):
        resolve_vad(router, {"hangover": 10})
    with pytest.raises(VadOverrideError, match="may not exceed the router's 10000 ms"):
        resolve_vad(router, {"max_segment": 20})
    with pytest.raises(VadOverrideError, match="frame_ms"):
        resolve_vad(router, {"frame_ms": 25})
    with pytest.raises(VadOverrideError, match="loudness: Extra inputs"):
        resolve_vad(router, {"loudness": 3})


SENTENCES = ["turn on the kitchen lights", "open the garage door"]


@pytest.fixture(scope="module")
def spoken() -> dict[str, np.ndarray]:
    return {text: speech_16k(audio) for text, audio in synthesize(SENTENCES).items()}


def speech_extent(samples: np.ndarray) -> tuple[float, float]:
    loud = np.nonzero(np.abs(samples) > 200)[0]
    return loud[0] * 1000 / RATE, (loud[-1] + 1) * 1000 / RATE


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_webrtcvad_finds_espeak_sentences_at_their_true_boundaries(
    spoken: dict[str, np.ndarray], frame_ms: int
) -> None:
    parts, truth, pos = [silence(500)], [], 500.0
    for text in SENTENCES:
        begin, end = speech_extent(spoken[text])
        truth.append((pos + begin, pos + end))
        parts += [spoken[text], silence(700)]
        pos += spoken[text].size * 1000 / RATE + 700
    pcm = np.concatenate(parts).tobytes()
    settings = VadSettings(mode=2, frame_ms=frame_ms)
    segments: list[Segment] = []
    events: list[VadEvent] = []
    reactivex.from_iterable([pcm[i : i + 882] for i in range(0, len(pcm), 882)]).pipe(
        vad_segments(settings, RATE)
    ).subscribe(events.append)
    reactivex.from_iterable(events).pipe(whole_segments(RATE)).subscribe(segments.append)
    assert len(segments) == 2
    # The onset is frame-quantised (one frame; a frame straddling the edge may go
    # either way). The end is the last sample above the silence floor: webrtcvad's
    # own built-in hangover (frames of digital silence it still calls speech) is
    # gated off, so it lands within a few ms of the truth, and the turn ends with
    # the first frame that completes the hangover after it.
    tolerance = 2 * frame_ms
    for segment, (begin, end) in zip(segments, truth, strict=True):
        assert begin - tolerance <= segment.start_ms <= begin + tolerance
        assert end - 5 <= segment.end_ms <= end + 5
        assert segment.audio_start_ms == max(0, segment.start_ms - 300 // frame_ms * frame_ms)
        waited = segment.audio_end_ms - segment.end_ms
        assert settings.hangover_ms <= waited <= settings.hangover_ms + frame_ms
        assert len(segment.pcm) == (segment.audio_end_ms - segment.audio_start_ms) * 32
