"""A speak request's audio output: its encoder and counters, and spoken items -> frames.

    Spoken ─► audio_frames(output) ─► binary audio frames, `model_unavailable`
        notices (with the bytes to drop), `segment` events, the encoder's tail

`pcm_s16le` and `wav` stream every chunk as it is synthesized, so a failed
segment's partial bytes are exactly `drop_bytes`. `flac`, `ogg_opus` and `mp3`
are compressed with state: a segment's audio is encoded when the segment is
complete (a failed attempt never reaches the encoder; `drop_bytes` is 0), and
the encoder may hold some of it until a later segment or the end.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from reactivex import Observable, abc

from audio.encode import STREAMING_ENCODINGS, PcmEncoder, StreamEncoder, make_encoder
from audio.sentences import Sentence
from config.models import AudioFormat
from operators.failover import Reset
from pipelines.speak_router import SegmentAudio
from pipelines.speech_out import SentenceEnd, Spoken
from protocol.frames import Frame, FrameFactory
from protocol.speak_frames import model_unavailable_frame, segment_frame
from providers.tts_types import Int16Array


class SpeakOutput:
    """One request's audio output: its encoder, counters and clock marks."""

    def __init__(self, fmt: AudioFormat, now: Callable[[], float]) -> None:
        self.format = fmt
        self.encoder: StreamEncoder = make_encoder(fmt.encoding, fmt.sample_rate, fmt.channels)
        self.streaming = fmt.encoding in STREAMING_ENCODINGS
        self.now = now
        self.started = now()
        self.first_audio: float | None = None
        self.samples = 0
        self.segments = 0
        self.closed = False
        self.played_before = 0.0

    def audio_seconds(self) -> float:
        """Audio delivered in kept segments so far."""
        return self.samples / self.format.sample_rate

    def mark_audio(self) -> None:
        """An audio frame is going out: remember when the first one did."""
        if self.first_audio is None:
            self.first_audio = self.now()

    def time_to_first_audio_ms(self) -> float | None:
        """From the request's start to its first audio frame (None: no audio yet)."""
        first = self.first_audio
        return None if first is None else round((first - self.started) * 1000, 1)

    def wait_before_next(self, max_lead: float) -> float:
        """Seconds to wait so that audio stays at most `max_lead` ahead of real time."""
        if self.first_audio is None:
            return 0.0
        ahead = self.audio_seconds() - self.played_before - (self.now() - self.first_audio)
        return max(0.0, ahead - max_lead)

    def continue_after(self, segments: int, pcm_bytes: int, audio_sent: bool) -> None:
        """Go on from a request taken over (pcm_s16le or wav only): `segments` were
        spoken elsewhere with `pcm_bytes` of audio, counted in the totals but taken as
        already played; after any audio (`audio_sent`) no WAV header goes out again."""
        fmt = self.format
        self.segments = segments
        self.samples = pcm_bytes // (2 * fmt.channels)
        self.played_before = self.audio_seconds()
        if audio_sent:
            self.encoder = PcmEncoder(fmt.sample_rate, fmt.channels)

    def close(self) -> bytes:
        """End the encoder (once); its last bytes."""
        if self.closed:
            return b""
        self.closed = True
        return self.encoder.close()

    def dispose(self) -> None:
        """Release the encoder whatever happened (cancel, error, done)."""
        self.close()


def ms(seconds: float) -> int:
    """Seconds -> whole milliseconds."""
    return round(seconds * 1000)


class _Segment:
    """The sentence being spoken: its bytes sent, samples and held audio, its model."""

    __slots__ = ("bytes", "model", "pending", "samples", "sentence")

    def __init__(self, sentence: Sentence | None) -> None:
        self.sentence = sentence
        self.bytes = 0
        self.samples = 0
        self.pending: list[Int16Array] = []
        self.model: str | None = None


def audio_frames(
    output: SpeakOutput, frames: FrameFactory, provider_id: Callable[[str], str]
) -> Callable[[Observable[Spoken]], Observable[Frame]]:
    """Spoken items in; audio frames, notices and `segment` events out, encoded by `output`.

    items:  -S-A-A-R(m1)-A-A-E-|     (S: Sentence, A: SegmentAudio, R: Reset, E: SentenceEnd)
    frames: ---a-a-N-----a-a-G-(t|)  (N: model_unavailable, G: segment, t: encoder tail)
    The tail goes out only when some segment was spoken. Errors pass through.
    """
    request_id = frames.request_id
    assert request_id is not None
    channels = output.format.channels
    rate = output.format.sample_rate

    def operator(source: Observable[Spoken]) -> Observable[Frame]:
        def subscribe(
            observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            seg = _Segment(None)

            def audio(data: bytes, counted: int) -> None:
                # `counted`: the bytes that belong to this segment (a WAV header does not)
                if data:
                    output.mark_audio()
                    seg.bytes += counted
                    observer.on_next(Frame(request_id, data))

            def on_next(item: Spoken) -> None:
                nonlocal seg
                if isinstance(item, SegmentAudio):
                    seg.model = item.model_id
                    seg.samples += item.samples.size
                    if output.streaming:
                        pcm_bytes = item.samples.size * 2 * channels
                        audio(output.encoder.write(item.samples), pcm_bytes)
                    else:
                        seg.pending.append(item.samples)
                elif isinstance(item, Reset):
                    index = seg.sentence.index if seg.sentence is not None else 0
                    observer.on_next(model_unavailable_frame(frames, item, index, seg.bytes))
                    seg = _Segment(seg.sentence)
                elif isinstance(item, SentenceEnd):
                    if seg.pending:
                        data = output.encoder.write(np.concatenate(seg.pending))
                        audio(data, len(data))
                    output.samples += seg.samples
                    output.segments += 1
                    model_id = seg.model
                    provider = provider_id(model_id) if model_id else None
                    observer.on_next(
                        segment_frame(
                            frames,
                            item.sentence,
                            provider,
                            model_id,
                            ms(seg.samples / rate),
                            seg.bytes,
                        )
                    )
                else:
                    seg = _Segment(item)

            def on_completed() -> None:
                tail = output.close()
                if tail and output.segments:
                    output.mark_audio()
                    observer.on_next(Frame(request_id, tail))
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator
