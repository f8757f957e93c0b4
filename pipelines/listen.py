"""The listen websocket (`GET /v1/speech/{router}/listen`): audio in, transcripts out.

Per request:

    inbound ─► per_request(request_id) ─► validate `listen` ─► audio intake
      (decode, downmix, resample to 16 kHz, limits, `end`) ─► vad_segments
      ├─► speech_started / speech_ended frames (at once)
      └─► one SegmentAudio per utterance ─► ListenRouter.transcribe (failover,
          retry passes, deadlines from the segment end) ─► concat_eager (in
          order) ─► transcript frames
    ─► terminal `done` (or error) ─► merge ─► the socket writer

Client messages (besides `cancel`):

- `{"type": "listen", "request_id", "format": {"encoding", "sample_rate",
  "channels"}, "language"?, "interim_results"?, "vad"?}` starts a request.
  `encoding` is `pcm_s16le` (8/11.025/16/22.05/24/32/44.1/48 kHz, mono or
  stereo, downmixed), `wav` (streamed), or `flac` / `ogg` / `ogg_opus` /
  `ogg_vorbis` / `mp3` (decoded whole at `end`; see `audio.pcm`). `vad`
  overrides the router's `listen.vad` keys within `operators.vad.VadLimits`.
- binary frames (1 byte N, N bytes of request id, audio) carry the audio, in any
  chunk sizes (a chunk may even split a sample).
- `{"type": "end", "request_id"}`: the audio is over; the open segment is
  flushed, every transcript delivered, then the terminal frame.

Server frames (the shared envelope plus):

- `speech_started {segment_id, start_ms}` and `speech_ended {segment_id,
  end_ms}`, sent as soon as the VAD decides (times are milliseconds of the
  request's audio, from sample counts; segment ids count from 0).
- `transcript {segment_id, text, is_final, start_ms, end_ms, provider_id,
  model_id}`: with `interim_results`, interim ones (`is_final: false`, each the
  whole text so far) may come, even before `speech_ended`; then exactly one
  final per segment, after its `speech_ended`. Transcripts come in segment
  order even though segments are transcribed concurrently; `speech_started`
  of a later segment may come before an earlier segment's final.
- a non-terminal `error {name: "model_unavailable", model_id, segment_id}` when
  a model failed after sending interim text for a segment; the segment (its
  audio after the last final result, for a streaming provider) is replayed to
  the next model and later transcripts replace the interim text.
- terminal frame of a successful request (our decision): `{"type": "done",
  "finish_reason": "complete", "usage": {"audio_ms", "segments"}}`.

Errors: `payload_parse_error` / `invalid_request` (a bad `listen` or `vad`),
`unsupported_format`, `invalid_audio` (undecodable bytes), `format_changed` (a
second `listen` with another format for an active request) and
`all_models_unavailable` end the request. `audio_too_long` (with `limit:
"max_audio_seconds"`): audio past `max_audio_seconds` is not taken; what came
before is transcribed and the request then ends with that error (its `usage`
says how much was heard).
Non-terminal: `unknown_request` (audio or `end` for a request that is not
active), `duplicate_request_id` (the same `listen` again), `audio_after_end`,
`invalid_audio` for bytes left over at `end` that do not make a whole sample,
`unsupported_message_type`. None of them closes the socket.

Every segment's audio stays in its `SegmentAudio` until its final transcript
is delivered; `cancel` and a disconnect dispose the request, which cancels
provider calls at once (sockets closed, queued local decodes dropped).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import reactivex
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from reactivex import Observable, abc
from reactivex import operators as ops

from audio.pcm import (
    ENCODINGS,
    PCM_RATES,
    AudioDecoder,
    AudioFormatError,
    InputFormat,
    open_decoder,
)
from config.models import ListenModelConfig, ListenSection, SpeechRouterConfig
from observability.logs import safe_extra
from observability.telemetry import RequestTelemetry
from operators.aio import from_async_iterable
from operators.deadlines import require_output
from operators.failover import AllModelsUnavailable, Reset, RouterHealth, failover, retry_passes
from operators.final_deadline import final_deadline
from operators.instrument import instrument_attempt
from operators.ordered import concat_eager, merge_now, then_emit
from operators.per_request import per_request
from operators.scheduling import defer_scheduled
from operators.vad import (
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
    VadEvent,
    VadOverrideError,
    resolve_vad,
    vad_segments,
)
from pipelines.common import Admission, describe_validation_error, request_frames
from pipelines.endpoint import BuildContext, Pipeline
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.messages import ClientMessage, Inbound
from providers.stt_registry import build_stt_provider
from providers.stt_types import (
    SegmentAudio,
    SttCommitted,
    SttEvent,
    SttFinal,
    SttProvider,
    SttRequest,
)
from providers.types import ErrorCategory, ProviderError
from routing.router import build_model_router
from routing.strategies import build_strategy

log = logging.getLogger("sluice.listen")

LISTEN = "listen"
AUDIO = "audio"
END = "end"
PIPELINE_RATE = 16000
"""Every request's audio is resampled to this rate for the VAD and the providers."""


class ListenErrorName:
    """Error names of the listen endpoint beyond `protocol.frames.ErrorName`."""

    UNSUPPORTED_FORMAT = "unsupported_format"
    INVALID_AUDIO = "invalid_audio"
    FORMAT_CHANGED = "format_changed"
    UNKNOWN_REQUEST = "unknown_request"
    AUDIO_AFTER_END = "audio_after_end"


class ListenError(Exception):
    """A request-ending problem with the client's audio; `name` goes on the wire."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


# ---- the `listen` message ---------------------------------------------------------


class ListenFormatIn(BaseModel):
    """`format` of a `listen` message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoding: str = "pcm_s16le"
    sample_rate: int | None = Field(default=None, ge=1)
    channels: int | None = Field(default=None, ge=1)


class ListenRequestIn(BaseModel):
    """The body of a `listen` message (envelope fields are ignored here)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: ListenFormatIn
    language: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}$"
    )
    interim_results: bool = False
    vad: dict[str, Any] | None = None

    def input_format(self) -> InputFormat:
        """The declared format for `audio.pcm.open_decoder`."""
        return InputFormat(self.format.encoding, self.format.sample_rate, self.format.channels)


# ---- transcribing one segment with failover ---------------------------------------


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which model produced a transcript."""

    model_id: str
    provider_id: str
    model_name: str


@dataclass(frozen=True, slots=True)
class SegmentTranscript:
    """A transcript of one segment, ready for the wire."""

    segment_id: int
    text: str
    is_final: bool
    start_ms: int
    end_ms: int
    model: ModelInfo


Transcriber = Callable[[SttRequest], Observable[SttEvent]]
"""One attempt: a segment's audio in, the provider's events out (cold)."""


def provider_transcriber(provider: SttProvider) -> Transcriber:
    """A provider adapter as a `Transcriber` (each subscription is a new call)."""

    def transcribe(request: SttRequest) -> Observable[SttEvent]:
        return from_async_iterable(lambda: provider.transcribe(request))

    return transcribe


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _is_final(event: SttEvent) -> bool:
    return isinstance(event, SttFinal)


def _is_final_transcript(item: SegmentTranscript) -> bool:
    return item.is_final


def _not_final(event: SttEvent) -> bool:
    return not isinstance(event, SttFinal)


@dataclass
class _Progress:
    """Text committed by failed attempts and the audio offset it covers."""

    text: str = ""
    offset_ms: int = 0


class ListenRouter:
    """The listen models of one speech router behind failover, retry and deadlines."""

    def __init__(
        self,
        router_id: str,
        config: SpeechRouterConfig,
        transcribers: Mapping[str, Transcriber],
        infos: Mapping[str, ModelInfo],
        rates: Mapping[str, int],
        health: RouterHealth,
        rng: random.Random,
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        assert config.listen is not None
        self.id = router_id
        self.config = config
        self.section: ListenSection = config.listen
        self.health = health
        self._models: dict[str, ListenModelConfig] = {m.id: m for m in self.section.models}
        self._transcribers = dict(transcribers)
        self._infos = dict(infos)
        self._rates = dict(rates)
        self._rng = rng
        self._scheduler = scheduler

    def transcribe(
        self,
        segment: SegmentAudio,
        language: str | None,
        interim: bool,
        telemetry: RequestTelemetry | None = None,
    ) -> Observable[SegmentTranscript | Reset]:
        """One segment's transcripts (interims when asked, then its final) from any model.

        Starts while the segment is still being spoken. An attempt must deliver
        its final within the model's `client.first_chunk_timeout` (and
        `timeout`) of the segment end, with gaps under `client.idle_timeout`;
        an attempt that ends without a final fails. After a failure the next
        model gets the audio after the last committed result, and the committed
        text is kept in front of what it says. Failed passes are retried with
        the router's backoff.
        """
        progress = _Progress()

        def attempt(model_id: str) -> Observable[SegmentTranscript]:
            model = self._models[model_id]
            info = self._infos[model_id]
            client = model.client

            def start(_: abc.SchedulerBase) -> Observable[SegmentTranscript]:
                base_text, offset = progress.text, progress.offset_ms
                seen = _Progress()
                request = SttRequest(segment, offset, language, interim, self._rates[model_id])

                def tag(event: SttEvent) -> SegmentTranscript:
                    final = isinstance(event, SttFinal)
                    end = (
                        segment.end_ms
                        if segment.end_ms is not None
                        else segment.audio_start_ms + segment.received_ms()
                    )
                    return SegmentTranscript(
                        segment.segment_id,
                        _join(base_text, event.text),
                        final,
                        segment.start_ms,
                        end,
                        info,
                    )

                if segment.finished and request.start_byte >= segment.size:
                    return reactivex.of(tag(SttFinal("")))  # everything was committed already

                def track(event: SttEvent) -> None:
                    if isinstance(event, SttCommitted):
                        seen.text, seen.offset_ms = event.text, event.through_ms

                def keep_progress(_: Exception) -> None:
                    if seen.offset_ms > 0:
                        progress.text = _join(base_text, seen.text)
                        progress.offset_ms = offset + seen.offset_ms

                events = self._transcribers[model_id](request)
                return events.pipe(
                    final_deadline(
                        segment.ended,
                        min(client.first_chunk_timeout, client.timeout),
                        client.idle_timeout,
                        _is_final,
                        scheduler=self._scheduler,
                    ),
                    require_output(_is_final, what="final transcript"),
                    ops.do_action(on_next=track, on_error=keep_progress),
                    ops.take_while(_not_final, inclusive=True),
                    ops.map(tag),
                    instrument_attempt(
                        telemetry, model_id, info.provider_id, is_final=_is_final_transcript
                    ),
                )

            return defer_scheduled(start, self._scheduler, "listen attempt")

        routed: Observable[SegmentTranscript | Reset] = failover(
            self.id,
            self.health,
            attempt,
            scheduler=self._scheduler,
            is_final=_is_final_transcript,
        ).pipe(retry_passes(self.config.retry, self._rng, scheduler=self._scheduler))
        if interim:
            return routed

        def wanted(item: SegmentTranscript | Reset) -> bool:
            return isinstance(item, SegmentTranscript) and item.is_final

        return routed.pipe(ops.filter(wanted))


# ---- operators of the request pipeline --------------------------------------------


@dataclass(frozen=True, slots=True)
class EndOfAudio:
    """The request's audio is over (`end`, or `limit_hit` at `max_audio_seconds`)."""

    limit_hit: bool


IntakeItem = bytes | Frame | EndOfAudio
"""PCM16 mono at `PIPELINE_RATE`, a non-terminal notice frame, or the end of audio."""


@dataclass
class IntakeState:
    """Counters the terminal frame reports."""

    samples: int = 0
    segments: int = 0
    limit_hit: bool = False

    def audio_ms(self) -> int:
        """Milliseconds of audio taken (at `PIPELINE_RATE`)."""
        return self.samples * 1000 // PIPELINE_RATE


def audio_intake(
    decoder: AudioDecoder,
    declared: ListenRequestIn,
    frames: FrameFactory,
    max_samples: int,
    state: IntakeState,
) -> Callable[[Observable[ClientMessage]], Observable[IntakeItem]]:
    """A request's later messages in; its decoded audio, notices and end out.

    msgs:   -a-a-a-e-a-|     (a: audio, e: end)
    result: -p-p-p-pE-n-     (p: PCM, E: EndOfAudio, n: `audio_after_end` notice)
    Audio past `max_samples` is cut exactly at the limit, then EndOfAudio
    (limit_hit). Undecodable audio or a format change errors with `ListenError`.
    """

    def operator(source: Observable[ClientMessage]) -> Observable[IntakeItem]:
        def subscribe(
            observer: abc.ObserverBase[IntakeItem], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            flags = {"ended": False, "late_notice": False, "failed": False}

            def notice(name: str, message: str, **extra: Any) -> None:
                observer.on_next(frames.error(name, message, finish_reason=None, **extra))

            def take(pcm: bytes) -> bool:
                """Emit PCM up to the limit; True when some of it was past the limit."""
                room = (max_samples - state.samples) * 2
                cut = len(pcm) > room
                if cut:
                    pcm = pcm[:room]
                if pcm:
                    state.samples += len(pcm) // 2
                    observer.on_next(pcm)
                return cut

            def finish(limit_hit: bool) -> None:
                flags["ended"] = True
                if not limit_hit:
                    limit_hit = take(decoder.flush())
                    if decoder.dangling_bytes:
                        notice(
                            ListenErrorName.INVALID_AUDIO,
                            f"the audio ended with {decoder.dangling_bytes} byte(s) that do not "
                            "make a whole sample frame; they were ignored",
                        )
                state.limit_hit = limit_hit
                observer.on_next(EndOfAudio(limit_hit))

            def on_audio(msg: ClientMessage) -> None:
                if flags["ended"]:
                    if not flags["late_notice"]:
                        flags["late_notice"] = True
                        notice(
                            ListenErrorName.AUDIO_AFTER_END,
                            "audio after the request's end (or its audio limit) is ignored",
                        )
                    return
                if take(decoder.push(msg.audio or b"")):
                    finish(True)

            def on_listen(msg: ClientMessage) -> None:
                try:
                    again = ListenRequestIn.model_validate(msg.body)
                except ValidationError:
                    again = None
                if again is not None and again.format == declared.format:
                    notice(
                        ErrorName.DUPLICATE_REQUEST_ID,
                        f"request {msg.request_id!r} is already listening; this 'listen' was "
                        "ignored (use a new request_id)",
                    )
                    return
                raise ListenError(
                    ListenErrorName.FORMAT_CHANGED,
                    "a second 'listen' with another format for an active request: the audio "
                    "format cannot change mid-stream (start a new request)",
                )

            def on_next(msg: ClientMessage) -> None:
                if flags["failed"]:
                    return
                try:
                    if msg.type == AUDIO:
                        on_audio(msg)
                    elif msg.type == END:
                        if flags["ended"]:
                            notice(ListenErrorName.AUDIO_AFTER_END, "the audio already ended")
                        else:
                            finish(False)
                    elif msg.type == LISTEN:
                        on_listen(msg)
                    else:
                        notice(
                            ErrorName.UNSUPPORTED_MESSAGE_TYPE,
                            f"listen takes 'audio' (binary), 'end' and 'cancel', not {msg.type!r}",
                        )
                except AudioFormatError as error:
                    flags["failed"] = True
                    observer.on_error(ListenError(error.name, str(error)))
                except ListenError as error:
                    flags["failed"] = True
                    observer.on_error(error)

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator


def _before_end(item: IntakeItem) -> bool:
    return not isinstance(item, EndOfAudio)


def _is_pcm(item: IntakeItem) -> bool:
    return isinstance(item, bytes)


def _is_notice(item: IntakeItem) -> bool:
    return isinstance(item, Frame)


def _as_pcm(item: IntakeItem) -> bytes:
    assert isinstance(item, bytes)
    return item


def _as_notice(item: IntakeItem) -> Frame:
    assert isinstance(item, Frame)
    return item


def live_segments(
    sample_rate: int, clock: Callable[[], float] | None = None
) -> Callable[[Observable[VadEvent]], Observable[SegmentAudio]]:
    """VAD events in; a `SegmentAudio` per utterance out, filled live as events arrive.

    `clock` stamps each segment's `finished_at` (when its end was known).

    events: -S-a-a-E-S-a-E-|
    result: -G-------H-----|   (G is appended a, a and finished at E)
    When the events error, an open segment is aborted with that error.
    """

    def operator(source: Observable[VadEvent]) -> Observable[SegmentAudio]:
        def subscribe(
            observer: abc.ObserverBase[SegmentAudio], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            current: list[SegmentAudio] = []

            def on_next(event: VadEvent) -> None:
                if isinstance(event, SpeechStarted):
                    segment = SegmentAudio(
                        event.segment_id, event.start_ms, event.audio_start_ms, sample_rate
                    )
                    current[:] = [segment]
                    observer.on_next(segment)
                elif isinstance(event, SpeechAudio):
                    if current:
                        current[0].append(event.pcm)
                elif current:
                    at = clock() if clock is not None else None
                    current.pop().finish(event.end_ms, event.audio_end_ms, at=at)

            def on_error(error: Exception) -> None:
                if current:
                    current.pop().abort(error)
                observer.on_error(error)

            return source.subscribe(on_next, on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator


# ---- frames -----------------------------------------------------------------------


def boundary_frame(frames: FrameFactory, event: SpeechStarted | SpeechEnded) -> Frame:
    """`speech_started` / `speech_ended` for a VAD event."""
    if isinstance(event, SpeechStarted):
        return frames.event("speech_started", segment_id=event.segment_id, start_ms=event.start_ms)
    return frames.event("speech_ended", segment_id=event.segment_id, end_ms=event.end_ms)


def transcript_frame(
    frames: FrameFactory, item: SegmentTranscript | Reset, segment_id: int
) -> Frame:
    """A `transcript` frame, or the non-terminal `model_unavailable` for a Reset."""
    if isinstance(item, Reset):
        return frames.error(
            ErrorName.MODEL_UNAVAILABLE,
            f"model {item.model_id!r} failed while transcribing segment {segment_id} "
            f"({item.error}); the segment's audio after its last final result is replayed "
            "to the next model",
            finish_reason=None,
            model_id=item.model_id,
            segment_id=segment_id,
        )
    return frames.event(
        "transcript",
        segment_id=item.segment_id,
        text=item.text,
        is_final=item.is_final,
        start_ms=item.start_ms,
        end_ms=item.end_ms,
        provider_id=item.model.provider_id,
        model_id=item.model.model_id,
    )


def terminal_frame(frames: FrameFactory, state: IntakeState, max_audio_seconds: float) -> Frame:
    """`done` (finish_reason complete) with usage, or `audio_too_long` at the limit."""
    usage = {"audio_ms": state.audio_ms(), "segments": state.segments}
    if state.limit_hit:
        return frames.error(
            ErrorName.AUDIO_TOO_LONG,
            f"the request passed max_audio_seconds ({max_audio_seconds:g}s); the audio up to "
            "the limit was transcribed, the rest was ignored",
            limit="max_audio_seconds",
            usage=usage,
        )
    done = frames.event("done", finish_reason="complete", usage=usage)
    return Frame(done.request_id, done.data, terminal=True)


def error_frame(frames: FrameFactory, router_id: str, error: Exception) -> Frame:
    """The terminal frame for a request whose pipeline failed."""
    if isinstance(error, ListenError):
        return frames.error(error.name, error.message)
    if isinstance(error, AllModelsUnavailable):
        log.warning(
            "all listen models unavailable",
            extra={"request_id": frames.request_id, "router": router_id, "cause": str(error)},
        )
        return frames.error(ErrorName.ALL_MODELS_UNAVAILABLE, str(error))
    if isinstance(error, ProviderError) and error.category is ErrorCategory.BAD_REQUEST:
        return frames.error(ErrorName.BAD_REQUEST, f"the provider rejected the request: {error}")
    log.error(
        "listen request failed",
        exc_info=error,
        extra={"request_id": frames.request_id, "router": router_id},
    )
    return frames.error(ErrorName.UNKNOWN_ERROR, f"internal error: {type(error).__name__}")


# ---- one request, one socket ------------------------------------------------------


def listen_request(
    router: ListenRouter,
    first: ClientMessage,
    later: Observable[ClientMessage],
    clock: Callable[[], float],
    telemetry: RequestTelemetry | None = None,
) -> Observable[Frame]:
    """One listen request: its first message and later ones in, its frames out.

    `telemetry` (when the app has it) hears each provider attempt and the time
    from each segment's end to its final transcript.
    """
    frames = FrameFactory(first.request_id, router.id, first.metadata, clock)
    if first.type in (AUDIO, END):
        return reactivex.of(
            frames.error(
                ListenErrorName.UNKNOWN_REQUEST,
                f"no active request {first.request_id!r}: send 'listen' first "
                f"(this {first.type!r} was ignored)",
                finish_reason=None,
            )
        )
    if first.type != LISTEN:
        return reactivex.of(
            frames.error(
                ErrorName.UNSUPPORTED_MESSAGE_TYPE,
                f"listen accepts 'listen', 'end', 'cancel' and binary audio, not {first.type!r}",
            )
        )
    try:
        request = ListenRequestIn.model_validate(first.body)
    except ValidationError as error:
        return reactivex.of(
            frames.error(ErrorName.PAYLOAD_PARSE_ERROR, describe_validation_error(error))
        )
    section = router.section
    try:
        settings = resolve_vad(section.vad, request.vad)
    except VadOverrideError as error:
        return reactivex.of(frames.error(ErrorName.INVALID_REQUEST, str(error)))
    try:
        decoder = open_decoder(request.input_format(), PIPELINE_RATE)
    except AudioFormatError as error:
        return reactivex.of(frames.error(error.name, str(error)))
    max_samples = int(section.max_audio_seconds * PIPELINE_RATE)

    def answer_for(inputs: Observable[ClientMessage]) -> Observable[Frame]:
        state = IntakeState()
        intake = inputs.pipe(audio_intake(decoder, request, frames, max_samples, state))

        def body(shared: Observable[IntakeItem]) -> Observable[Frame]:
            pcm: Observable[bytes] = shared.pipe(
                ops.take_while(_before_end), ops.filter(_is_pcm), ops.map(_as_pcm)
            )
            notices: Observable[Frame] = shared.pipe(ops.filter(_is_notice), ops.map(_as_notice))

            def segment_frames(events: Observable[VadEvent]) -> Observable[Frame]:
                return _segment_frames(events, router, request, frames, state, clock, telemetry)

            def with_notices(main: Observable[Frame]) -> Observable[Frame]:
                return merge_now(main, notices.pipe(ops.take_until(main.pipe(ops.count()))))

            events: Observable[VadEvent] = pcm.pipe(vad_segments(settings, PIPELINE_RATE))
            answer: Observable[Frame] = events.pipe(ops.publish(segment_frames))
            return answer.pipe(ops.publish(with_notices))

        def closing() -> Frame:
            return terminal_frame(frames, state, section.max_audio_seconds)

        return intake.pipe(ops.publish(body), then_emit(closing))

    return request_frames(
        frames, answer_for, later, lambda error: error_frame(frames, router.id, error)
    )


def _segment_frames(
    events: Observable[VadEvent],
    router: ListenRouter,
    request: ListenRequestIn,
    frames: FrameFactory,
    state: IntakeState,
    clock: Callable[[], float],
    telemetry: RequestTelemetry | None,
) -> Observable[Frame]:
    metrics = telemetry.telemetry.metrics if telemetry is not None else None

    def is_boundary(event: VadEvent) -> bool:
        return isinstance(event, SpeechStarted | SpeechEnded)

    def to_boundary(event: VadEvent) -> Frame:
        assert isinstance(event, SpeechStarted | SpeechEnded)
        if isinstance(event, SpeechEnded):
            state.segments += 1
        return boundary_frame(frames, event)

    def transcribed(segment: SegmentAudio) -> Observable[Frame]:
        def to_frame(item: SegmentTranscript | Reset) -> Frame:
            if (
                metrics is not None
                and telemetry is not None
                and isinstance(item, SegmentTranscript)
                and item.is_final
                and segment.finished_at is not None
            ):
                labels = telemetry.labels(item.model.model_id, item.model.provider_id)
                waited = max(0.0, clock() - segment.finished_at)
                metrics.time_to_final_transcript.labels(*labels).observe(waited)
            return transcript_frame(frames, item, segment.segment_id)

        transcripts = router.transcribe(
            segment, request.language, request.interim_results, telemetry
        )
        return transcripts.pipe(ops.map(to_frame))

    boundaries = events.pipe(ops.filter(is_boundary), ops.map(to_boundary))
    transcripts = events.pipe(
        live_segments(PIPELINE_RATE, clock), ops.map(transcribed), concat_eager()
    )
    return merge_now(boundaries, transcripts)


def listen_pipeline(
    router: ListenRouter, clock: Callable[[], float], admission: Admission
) -> Pipeline:
    """The whole listen socket: inbound messages in, merged frames out."""

    def start(first: ClientMessage, later: Observable[ClientMessage]) -> Observable[Frame]:
        telemetry = admission.request_telemetry(first.request_id)
        return listen_request(router, first, later, clock, telemetry)

    def pipeline(inbound: Observable[Inbound]) -> Observable[Frame]:
        return inbound.pipe(
            per_request(
                start,
                bad_message=admission.bad_message_frame(router.id, clock),
                admit=admission.admit_frame(router.id, clock),
                crashed=admission.crashed_frame(router.id, clock),
                on_active_change=admission.on_active_change,
            )
        )

    return pipeline


# ---- the endpoint -----------------------------------------------------------------


class ListenEndpoint:
    """`GET /v1/speech/{router}/listen` of one speech router (a `SocketEndpoint`)."""

    default_type = LISTEN

    def __init__(
        self,
        router: SpeechRouterConfig,
        context: BuildContext,
        providers: Mapping[str, SttProvider] | None = None,
    ) -> None:
        if router.listen is None:
            raise ValueError(f"speech router {router.id!r} has no listen section")
        self.router_id = router.id
        self.section = router.listen
        models = [m for m in self.section.models if m.enabled]
        self.providers: dict[str, SttProvider] = (
            dict(providers)
            if providers is not None
            else {m.id: build_stt_provider(m, context.session) for m in models}
        )
        self.health = build_model_router(
            f"listen:{router.id}",
            models,
            build_strategy(self.section.strategy, models),
            context.clock(),
            self._health_event,
            context.health_share,
        )
        self.router = ListenRouter(
            router.id,
            router,
            {m.id: provider_transcriber(self.providers[m.id]) for m in models},
            {
                m.id: ModelInfo(
                    m.id, self.providers[m.id].provider_id, self.providers[m.id].model_name
                )
                for m in models
            },
            {m.id: self.providers[m.id].sample_rate for m in models},
            self.health,
            random.Random(),
            context.scheduler,
        )
        self._clock = context.clock

    def _health_event(self, event: str, fields: dict[str, Any]) -> None:
        log.error(event, extra=safe_extra({"router": self.router_id, "endpoint": LISTEN, **fields}))

    def pipeline(self, admission: Admission) -> Pipeline:
        """A fresh pipeline for one accepted socket."""
        return listen_pipeline(self.router, self._clock, admission)

    def describe(self, now: float) -> dict[str, Any]:
        """Models, providers, health, VAD and accepted formats (never a secret)."""
        states = self.health.health_states(now)
        return {
            "strategy": self.section.strategy,
            "models": [
                {
                    "id": model_id,
                    "provider": provider.provider_id,
                    "model_name": provider.model_name,
                    "health": states.get(model_id),
                    **{k: v for k, v in provider.describe().items() if k != "model"},
                }
                for model_id, provider in self.providers.items()
            ],
            "vad": self.section.vad.model_dump(),
            "max_audio_seconds": self.section.max_audio_seconds,
            "encodings": list(ENCODINGS),
            "pcm_sample_rates": list(PCM_RATES),
        }

    async def aclose(self) -> None:
        """Close every provider (worker threads, connections)."""
        await asyncio.gather(
            *(provider.aclose() for provider in self.providers.values()), return_exceptions=True
        )


def build_listen_endpoint(router: SpeechRouterConfig, context: BuildContext) -> ListenEndpoint:
    """The listen endpoint of `router` (its providers built from config)."""
    return ListenEndpoint(router, context)
