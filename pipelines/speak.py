"""The speak websocket pipeline: text (or streamed LLM tokens) in, audio out.

    inbound ─► per_request(request_id) ─► validate `speak` ─► text pieces
        ─► split_sentences ─► per sentence, in order: failover over the speak
           models (deadlines, empty audio = failure) ─► resample to the request's
           rate ─► encode (one encoder per request) ─► binary audio frames,
           `segment` events, `model_unavailable` notices
        ─► `done` (terminal) ─► cancel / terminal rule ─► merge ─► socket writer

Protocol (DESIGN section 3; these are the speak endpoint's decisions):

- Start: `{"type": "speak", "request_id", "text"?, "voice"?, "format"?: {"encoding",
  "sample_rate", "channels"}, "final"?}`. `format` fields default to the router's
  `speak.format`; `voice` is a string for every model, or an object keyed by model
  id or provider key (`{"local": "en-us", "openai": "alloy"}`); a missing voice
  falls back to `speak.voice`, then to each provider's configured voice.
- More text: `{"type": "text", "request_id", "text", "final"?}`; input ends at
  `final: true`. Synthesis of the first sentence starts as soon as it is complete.
- Audio: binary frames (request id prefix, then bytes in the request's format).
- `{"type": "segment", ..., "segment": {"segment_id", "text", "start_char",
  "end_char", "provider_id", "model_id", "audio_ms", "audio_bytes"}}` follows the
  audio of each sentence (ids count from 0; chars index the whole input text;
  `audio_bytes` never counts the WAV header, which goes out with the first audio).
- A provider failing inside a sentence: `{"type": "error", "error": {"name":
  "model_unavailable", "segment_id", "model_id", "drop_bytes"}}` (no
  finish_reason): drop the last `drop_bytes` audio bytes received for this
  request (the failed segment's partial audio); that sentence and the rest are
  then synthesized by the next model (the failed model goes last for the rest of
  the request). Audio of earlier segments is kept.
- The end: `{"type": "done", ..., "finish_reason": "complete", "usage":
  {"characters", "audio_ms"}, "time_to_first_audio_ms", "segments"}` (terminal;
  `characters` is the input text's length, `time_to_first_audio_ms` runs on the
  scheduler's clock from the request's start to its first audio frame). Errors
  are terminal `error` frames (`cancelled` on cancel).
- Typed errors for one request (the socket lives): `unsupported_format` (unknown
  encoding, a rate the encoding cannot do), `invalid_request` (final without any
  text, bad fields, text after final), `text_too_long` (past `max_text_chars`;
  `limit: "max_text_chars"`),
  `request_not_found` (`text` for a request that is not in flight),
  `duplicate_request_id` / `unsupported_message_type` (non-terminal while the
  request runs).

Format notes: `pcm_s16le` and `wav` stream every chunk as it is synthesized, and a
failed segment's partial bytes are exactly `drop_bytes`. `flac`, `ogg_opus` and
`mp3` are compressed with state, so a segment's audio is encoded when the segment
is complete (a failed attempt never reaches the encoder; `drop_bytes` is 0), and
the encoder may hold some of it until a later segment or the end.

Flow control: audio may run at most `MAX_LEAD_SECONDS` (10 s) ahead of real time
(counted from the first audio byte); the next sentence waits otherwise, so a long
text does not flood a client that plays in real time (or the socket's bounded
queue), and a cancel leaves little synthesized for nothing.

Ordering: a request's later messages are held (`HeldMessages`) until its pipeline
is subscribed, and the split between text pieces and notices goes through
single-subscriber `Mailbox`es, because Rx's `merge`/`concat` subscribe their
inner sources a scheduler tick late and a hot source would lose what arrives
in between (e.g. a `text` sent right behind its `speak`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
import numpy as np
import reactivex
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
)
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.notification import Notification, OnCompleted, OnError, OnNext
from reactivex.scheduler import CurrentThreadScheduler
from reactivex.subject import Subject

from audio.encode import STREAMING_ENCODINGS, StreamEncoder, check_format, make_encoder
from audio.resample import Resampler
from audio.sentences import DEFAULT_MAX_CHARS, Sentence, TextPiece, split_sentences
from config.models import (
    AudioEncoding,
    AudioFormat,
    ElevenLabsConfig,
    EspeakConfig,
    OpenAISpeechConfig,
    SpeakModelConfig,
    SpeakSection,
    SpeechRouterConfig,
)
from observability.logs import safe_extra
from observability.telemetry import RequestTelemetry
from operators.aio import from_async_iterable
from operators.deadlines import deadlines, require_output
from operators.failover import AllModelsUnavailable, Reset, RouterHealth, failover, retry_passes
from operators.instrument import instrument_attempt
from operators.ordered import merge_now
from operators.per_request import per_request
from operators.scheduling import defer_scheduled, seconds
from pipelines.common import Admission, describe_validation_error, request_frames
from pipelines.endpoint import BuildContext, Pipeline
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.messages import ClientMessage, Inbound
from providers.tts_types import Int16Array, PcmChunk, SpeechProvider, SpeechRequest
from providers.types import ErrorCategory, ProviderError
from routing.router import build_model_router
from routing.strategies import build_strategy

log = logging.getLogger("sluice.speak")

T = TypeVar("T")

SPEAK = "speak"
TEXT = "text"

UNSUPPORTED_FORMAT = "unsupported_format"
REQUEST_NOT_FOUND = "request_not_found"

MAX_LEAD_SECONDS = 10.0
"""Default for how far audio may run ahead of real time before synthesis waits."""

Voice = str | dict[str, str] | None
SourceFactory = Callable[[str, SpeechRequest], Observable[PcmChunk]]
"""(model id, request) -> that model's PCM chunks (tests hand in cold observables)."""


# ---- the request --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeakSpec:
    """A validated `speak` message."""

    format: AudioFormat
    voice: Voice
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a `speak` message was refused: an error name and a message."""

    name: str
    message: str
    limit: str | None = None
    """The config key of the limit that refused it (e.g. "max_text_chars")."""


class SpeakFormatIn(BaseModel):
    """`format` of a `speak` message: any field left out takes the router's `speak.format`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoding: AudioEncoding | None = None
    sample_rate: int | None = Field(default=None, ge=8000, le=48000)
    channels: int | None = Field(default=None, ge=1, le=2)


class SpeakRequestIn(BaseModel):
    """The body of a `speak` message (envelope fields are ignored here).

    `voice` is one voice for every model, or voices keyed by model id or provider key.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    text: StrictStr | None = None
    voice: StrictStr | dict[str, StrictStr] | None = None
    format: SpeakFormatIn | None = None
    final: StrictBool = False


class TextRequestIn(BaseModel):
    """The body of a `text` message: more text for a `speak` request in flight."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    text: StrictStr = ""
    final: StrictBool = False


_FIELD_REFUSALS = {
    "text": "text must be a string",
    "final": "final must be true or false",
    "voice": "voice must be a string or an object of strings keyed by model id or provider",
}


def _refusal(error: ValidationError) -> Refusal:
    """The refusal for the first bad field, in the order text, final, voice, format."""
    bad = {str(e["loc"][0]) for e in error.errors(include_url=False) if e["loc"]}
    for field, message in _FIELD_REFUSALS.items():
        if field in bad:
            return Refusal(ErrorName.INVALID_REQUEST, message)
    return Refusal(UNSUPPORTED_FORMAT, describe_validation_error(error))


def parse_speak(body: Mapping[str, Any], section: SpeakSection) -> SpeakSpec | Refusal:
    """A `speak` message's JSON body -> its spec, or the reason it is refused."""
    try:
        request = SpeakRequestIn.model_validate(body)
        given = request.format.model_dump(exclude_none=True) if request.format else {}
        fmt = AudioFormat.model_validate({**section.format.model_dump(), **given})
    except ValidationError as error:
        return _refusal(error)
    problem = check_format(fmt.encoding, fmt.sample_rate, fmt.channels)
    if problem is not None:
        return Refusal(UNSUPPORTED_FORMAT, problem)
    final, voice, text = request.final, request.voice, request.text or ""
    if final and not text.strip():
        return Refusal(ErrorName.INVALID_REQUEST, "final is true but there is no text to speak")
    if len(text) > section.max_text_chars:
        return Refusal(
            ErrorName.TEXT_TOO_LONG,
            f"text has {len(text)} characters; the limit is {section.max_text_chars}",
            limit="max_text_chars",
        )
    return SpeakSpec(fmt, voice, text, final)


# ---- routing one sentence --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentAudio:
    """Audio of the sentence in progress, already at the request's sample rate (mono)."""

    model_id: str
    samples: Int16Array


SegmentItem = SegmentAudio | Reset


class StickyHealth:
    """One request's view of the router's health: models that failed it go last.

    After a mid-sentence failure, the rest of the request is synthesized on the
    next model; the failed one is still tried, last, should every other fail.
    """

    def __init__(self, base: RouterHealth) -> None:
        self._base = base
        self.failed: list[str] = []

    def plan(self, now: float) -> list[str]:
        """The base plan with this request's failed models moved to the end."""
        plan = self._base.plan(now)
        return [m for m in plan if m not in self.failed] + [m for m in plan if m in self.failed]

    def available(self, model_id: str, now: float) -> bool:
        """As the base says."""
        return self._base.available(model_id, now)

    def begin_attempt(self, model_id: str, now: float) -> None:
        """As the base."""
        self._base.begin_attempt(model_id, now)

    def record_success(self, model_id: str, now: float, latency: float | None) -> None:
        """As the base."""
        self._base.record_success(model_id, now, latency)

    def record_failure(self, model_id: str, error: BaseException, now: float) -> None:
        """Remember the failure for this request, and tell the base."""
        if model_id not in self.failed:
            self.failed.append(model_id)
        self._base.record_failure(model_id, error, now)

    def cancel_attempt(self, model_id: str, now: float) -> None:
        """As the base."""
        self._base.cancel_attempt(model_id, now)


def resample_chunks(
    to_rate: int,
) -> Callable[[Observable[PcmChunk]], Observable[Int16Array]]:
    """PCM chunks at the provider's rate in, int16 samples at `to_rate` out.

    chunks: -a(22050)-b(22050)-|
    result: -a'-------b'-------t|    (t: the filter's tail, flushed at completion)
    Empty outputs are skipped; a change of input rate flushes and starts over.
    Errors pass through (the tail is dropped).
    """

    def operator(source: Observable[PcmChunk]) -> Observable[Int16Array]:
        def subscribe(
            observer: abc.ObserverBase[Int16Array], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            state: dict[str, Resampler | None] = {"resampler": None}

            def emit(samples: Int16Array) -> None:
                if samples.size:
                    observer.on_next(samples)

            def on_next(chunk: PcmChunk) -> None:
                current = state["resampler"]
                if current is None or current.from_rate != chunk.sample_rate:
                    if current is not None:
                        emit(current.flush())
                    current = Resampler(chunk.sample_rate, to_rate)
                    state["resampler"] = current
                emit(current.process(chunk.samples))

            def on_completed() -> None:
                current = state["resampler"]
                if current is not None:
                    emit(current.flush())
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator


def _has_audio(chunk: PcmChunk) -> bool:
    return chunk.samples.size > 0


class SpeakRouter:
    """A speech router's speak models behind failover, retry passes and deadlines.

    `segment(text, voice, sample_rate, context_id, health)` -> Observable of
    `SegmentAudio | Reset`: one sentence's audio at `sample_rate`, from whichever
    model succeeds. Pipelines depend on this observable, not on providers.
    """

    def __init__(
        self,
        config: SpeechRouterConfig,
        providers: Mapping[str, SpeechProvider],
        health: RouterHealth,
        rng: random.Random,
        scheduler: abc.SchedulerBase | None = None,
        source: SourceFactory | None = None,
    ) -> None:
        if config.speak is None:
            raise ValueError(f"speech router {config.id!r} has no speak section")
        self.config = config
        self.section: SpeakSection = config.speak
        self.id = config.id
        self.health = health
        self.providers = dict(providers)
        self._models = {m.id: m for m in self.section.models if m.enabled}
        self._rng = rng
        self._scheduler = scheduler
        self._source = source or self._provider_source

    @property
    def models(self) -> list[SpeakModelConfig]:
        """The enabled speak models, in config order."""
        return list(self._models.values())

    def _provider_source(self, model_id: str, request: SpeechRequest) -> Observable[PcmChunk]:
        provider = self.providers[model_id]
        return from_async_iterable(lambda: provider.synthesize(request))

    def provider_id(self, model_id: str) -> str:
        """The provider key of `model_id` (e.g. "local")."""
        return self._models[model_id].provider_key

    def voice_for(self, model_id: str, requested: Voice) -> str | None:
        """The voice `model_id` should use (None: the provider's configured one)."""
        if isinstance(requested, dict):
            voice = requested.get(model_id) or requested.get(self.provider_id(model_id))
        else:
            voice = requested
        return voice or self.section.voice

    def native_rate(self, model_id: str, preferred: int) -> int:
        """The rate `model_id` produces for a client that wants `preferred` Hz."""
        provider = self.providers.get(model_id)
        return provider.sample_rate_for(preferred) if provider is not None else preferred

    def segment(
        self,
        text: str,
        voice: Voice,
        sample_rate: int,
        context_id: str,
        health: RouterHealth,
        telemetry: RequestTelemetry | None = None,
    ) -> Observable[SegmentItem]:
        """One sentence's audio at `sample_rate`, with failover across the models.

        Each attempt runs under the model's first-chunk, idle and overall
        deadlines; an attempt that ends with no audio is a failure. `telemetry`
        (the request's) hears each attempt.
        """

        def attempt(model_id: str) -> Observable[SegmentItem]:
            client = self._models[model_id].client
            request = SpeechRequest(
                text,
                self.voice_for(model_id, voice),
                self.native_rate(model_id, sample_rate),
                f"{context_id}:{model_id}",
            )

            def tag(samples: Int16Array) -> SegmentItem:
                return SegmentAudio(model_id, samples)

            return self._source(model_id, request).pipe(
                deadlines(
                    client.first_chunk_timeout,
                    client.idle_timeout,
                    client.timeout,
                    what="audio",
                    scheduler=self._scheduler,
                ),
                require_output(_has_audio, what="audio"),
                resample_chunks(sample_rate),
                ops.map(tag),
                instrument_attempt(telemetry, model_id, self.provider_id(model_id)),
            )

        return failover(self.id, health, attempt, scheduler=self._scheduler).pipe(
            retry_passes(self.config.retry, self._rng, scheduler=self._scheduler)
        )


# ---- one request ------------------------------------------------------------------


class _Output:
    """One request's audio output: its encoder, counters and clock marks."""

    def __init__(self, fmt: AudioFormat, now: Callable[[], float]) -> None:
        self.format = fmt
        self.encoder: StreamEncoder = make_encoder(fmt.encoding, fmt.sample_rate, fmt.channels)
        self.streaming = fmt.encoding in STREAMING_ENCODINGS
        self.now = now
        self.started = now()
        self.first_audio: float | None = None
        self.samples = 0
        self.characters = 0
        self.segments = 0
        self.closed = False

    def audio_seconds(self) -> float:
        """Audio delivered in kept segments so far."""
        return self.samples / self.format.sample_rate

    def mark_audio(self) -> None:
        """An audio frame is going out: remember when the first one did."""
        if self.first_audio is None:
            self.first_audio = self.now()

    def wait_before_next(self, max_lead: float) -> float:
        """Seconds to wait so that audio stays at most `max_lead` ahead of real time."""
        if self.first_audio is None:
            return 0.0
        ahead = self.audio_seconds() - (self.now() - self.first_audio)
        return max(0.0, ahead - max_lead)

    def close(self) -> bytes:
        """End the encoder (once); its last bytes."""
        if self.closed:
            return b""
        self.closed = True
        return self.encoder.close()

    def dispose(self) -> None:
        """Release the encoder whatever happened (cancel, error, done)."""
        self.close()


def _ms(seconds_: float) -> int:
    return round(seconds_ * 1000)


def speak_error_frame(frames: FrameFactory, router_id: str, error: Exception) -> Frame:
    """The terminal frame for a speak request whose synthesis failed."""
    if isinstance(error, AllModelsUnavailable):
        log.warning(
            "all speak models unavailable",
            extra={"request_id": frames.request_id, "router": router_id, "cause": str(error)},
        )
        return frames.error(ErrorName.ALL_MODELS_UNAVAILABLE, str(error))
    if isinstance(error, ProviderError) and error.category is ErrorCategory.BAD_REQUEST:
        return frames.error(ErrorName.BAD_REQUEST, f"the provider rejected the request: {error}")
    log.error(
        "speak request failed",
        exc_info=error,
        extra={"request_id": frames.request_id, "router": router_id},
    )
    return frames.error(ErrorName.UNKNOWN_ERROR, f"internal error: {type(error).__name__}")


class Mailbox(Generic[T]):
    """A hot stream for exactly one subscriber that may subscribe late.

    Rx combinators subscribe their inner sources a scheduler tick late, so a
    plain Subject would lose what is pushed in between: a Mailbox keeps it.
    push: -a-b----c-|        subscriber (from tick 3): --(ab)-c-|
    After the subscriber disposes, pushes are dropped; a second subscriber errors.
    """

    def __init__(self) -> None:
        self._queue: list[Notification[T]] = []
        self._observer: abc.ObserverBase[T] | None = None
        self._taken = False

    def on_next(self, value: T) -> None:
        """Push an item."""
        self._push(OnNext(value))

    def on_error(self, error: Exception) -> None:
        """Push an error."""
        self._push(OnError(error))

    def on_completed(self) -> None:
        """Push completion."""
        self._push(OnCompleted())

    def _push(self, note: Notification[T]) -> None:
        if self._observer is not None:
            note.accept(self._observer)
        elif not self._taken:
            self._queue.append(note)

    @property
    def observable(self) -> Observable[T]:
        """The stream (one subscription only)."""

        def subscribe(
            observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if self._taken:
                observer.on_error(RuntimeError("a Mailbox has one subscriber"))
                return Disposable()
            self._taken = True
            queued, self._queue = self._queue, []
            self._observer = observer
            for note in queued:
                note.accept(observer)

            def detach() -> None:
                self._observer = None

            return Disposable(detach)

        return Observable(subscribe)


class HeldMessages:
    """A request's later messages, listened to from creation, replayed on `release()`.

    per_request hands each request a hot Subject of its later messages, but parts
    of a pipeline subscribe a scheduler tick late (Rx's `merge` schedules its inner
    subscriptions); a `text` or `cancel` sent right behind `speak` would be lost.
    `messages` holds everything until `release()`, then passes messages straight on.
    """

    def __init__(self, later: Observable[ClientMessage]) -> None:
        self.messages: Subject[ClientMessage] = Subject()
        self._held: list[Notification[ClientMessage]] | None = []
        self._subscription = later.subscribe(
            lambda msg: self._push(OnNext(msg)),
            lambda error: self._push(OnError(error)),
            lambda: self._push(OnCompleted()),
        )

    def _push(self, note: Notification[ClientMessage]) -> None:
        if self._held is None:
            note.accept(self.messages)
        else:
            self._held.append(note)

    def release(self) -> None:
        """Replay what was held (in order) and pass everything on from now on."""
        held, self._held = self._held or [], None
        for note in held:
            note.accept(self.messages)

    def dispose(self) -> None:
        """Stop listening."""
        self._subscription.dispose()


def _input_events(
    first: TextPiece,
    later: Observable[ClientMessage],
    release: Callable[[], None],
    frames: FrameFactory,
    max_chars: int,
    output: _Output,
) -> Observable[TextPiece | Frame]:
    """The request's text pieces (first, then each `text` message) and its notices.

    later:  -t1--s--t2(final)--t3-
    result: P0-P1-D--P2--------E--    (D: duplicate, E: text after final; both
                                       non-terminal; `text_too_long` is terminal)
    The first piece goes out a scheduler tick after subscription (when everything
    downstream is subscribed), then `release()` lets held messages through.
    """

    def subscribe(
        observer: abc.ObserverBase[TextPiece | Frame],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        state = {"final": first.final}
        output.characters = len(first.text)

        def notice(name: str, message: str) -> None:
            observer.on_next(frames.error(name, message, finish_reason=None))

        def handle(msg: ClientMessage) -> None:
            if msg.type == SPEAK:
                notice(
                    ErrorName.DUPLICATE_REQUEST_ID,
                    f"request {msg.request_id!r} is still in flight; this speak message "
                    "was ignored (use a new request_id, or send type 'text')",
                )
                return
            if msg.type != TEXT:
                notice(
                    ErrorName.UNSUPPORTED_MESSAGE_TYPE,
                    f"speak accepts 'speak', 'text' and 'cancel' messages, not {msg.type!r}",
                )
                return
            if state["final"]:
                notice(ErrorName.INVALID_REQUEST, "the text already ended (final: true)")
                return
            try:
                piece = TextRequestIn.model_validate(msg.body)
            except ValidationError:
                notice(ErrorName.INVALID_REQUEST, "text must be a string and final a boolean")
                return
            text, final = piece.text, piece.final
            output.characters += len(text)
            if output.characters > max_chars:
                observer.on_next(
                    frames.error(
                        ErrorName.TEXT_TOO_LONG,
                        f"the text passed {max_chars} characters (max_text_chars)",
                        limit="max_text_chars",
                    )
                )
                return
            state["final"] = final
            observer.on_next(TextPiece(text, final))

        def begin(_: abc.SchedulerBase, __: Any = None) -> None:
            observer.on_next(first)
            release()

        upstream = later.subscribe(
            handle, observer.on_error, observer.on_completed, scheduler=scheduler
        )
        start = (scheduler or CurrentThreadScheduler.singleton()).schedule(begin)
        return CompositeDisposable(upstream, start)

    return Observable(subscribe)


def _segment_frames(
    router: SpeakRouter,
    spec: SpeakSpec,
    sentence: Sentence,
    frames: FrameFactory,
    output: _Output,
    health: StickyHealth,
    telemetry: RequestTelemetry | None,
) -> Observable[Frame]:
    """One sentence: audio frames (and model_unavailable notices), then its `segment` event.

    items:  -A-A-R(m1)-A-A-|      (A: SegmentAudio, R: Reset)
    frames: -a-a-E-----a-a-S|     (E: model_unavailable naming the segment, S: segment)
    """
    request_id = frames.request_id
    assert request_id is not None
    fmt = spec.format

    def subscribe(
        observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        seg: dict[str, Any] = {"bytes": 0, "samples": 0, "pending": [], "model": None}

        def audio(data: bytes, counted: int) -> None:
            # `counted`: the bytes that belong to this segment (a WAV header does not)
            if not data:
                return
            output.mark_audio()
            seg["bytes"] += counted
            observer.on_next(Frame(request_id, data))

        def on_next(item: SegmentItem) -> None:
            if isinstance(item, Reset):
                observer.on_next(
                    frames.error(
                        ErrorName.MODEL_UNAVAILABLE,
                        f"model {item.model_id!r} failed inside segment {sentence.index} "
                        f"({item.error}); drop the last {seg['bytes']} audio bytes, this "
                        "sentence and the rest are synthesized by the next model",
                        finish_reason=None,
                        model_id=item.model_id,
                        segment_id=sentence.index,
                        drop_bytes=seg["bytes"],
                    )
                )
                seg.update(bytes=0, samples=0, pending=[], model=None)
                return
            seg["model"] = item.model_id
            seg["samples"] += item.samples.size
            if output.streaming:
                pcm_bytes = item.samples.size * 2 * fmt.channels
                audio(output.encoder.write(item.samples), pcm_bytes)
            else:
                seg["pending"].append(item.samples)

        def on_completed() -> None:
            if seg["pending"]:
                data = output.encoder.write(np.concatenate(seg["pending"]))
                audio(data, len(data))
            output.samples += seg["samples"]
            output.segments += 1
            model_id = seg["model"]
            observer.on_next(
                frames.event(
                    "segment",
                    segment={
                        "segment_id": sentence.index,
                        "text": sentence.text,
                        "start_char": sentence.start_char,
                        "end_char": sentence.end_char,
                        "provider_id": router.provider_id(model_id) if model_id else None,
                        "model_id": model_id,
                        "audio_ms": _ms(seg["samples"] / fmt.sample_rate),
                        "audio_bytes": seg["bytes"],
                    },
                )
            )
            observer.on_completed()

        items = router.segment(
            sentence.text,
            spec.voice,
            fmt.sample_rate,
            f"{request_id}:{sentence.index}",
            health,
            telemetry,
        )
        return items.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

    return Observable(subscribe)


def _paced(source: Observable[Frame], output: _Output, max_lead: float) -> Observable[Frame]:
    """`source`, subscribed only once audio is at most `max_lead` s ahead of real time."""

    def start(sched: abc.SchedulerBase) -> Observable[Frame]:
        wait = output.wait_before_next(max_lead)
        if wait <= 0:
            return source
        return reactivex.timer(wait, scheduler=sched).pipe(ops.flat_map(lambda _: source))

    return defer_scheduled(start, None, "speak pacing")


def _finish(frames: FrameFactory, output: _Output) -> Observable[Frame]:
    """After the last segment: the encoder's tail, then `done` (or an error)."""
    request_id = frames.request_id
    assert request_id is not None

    def end() -> Observable[Frame]:
        out: list[Frame] = []
        tail = output.close()
        if output.segments == 0:
            return reactivex.of(
                frames.error(ErrorName.INVALID_REQUEST, "the text has nothing to speak")
            )
        if tail:
            output.mark_audio()
            out.append(Frame(request_id, tail))
        first = output.first_audio
        done = frames.event(
            "done",
            finish_reason="complete",
            usage={"characters": output.characters, "audio_ms": _ms(output.audio_seconds())},
            time_to_first_audio_ms=(
                None if first is None else round((first - output.started) * 1000, 1)
            ),
            segments=output.segments,
        )
        out.append(Frame(done.request_id, done.data, terminal=True))
        return reactivex.from_iterable(out)

    return reactivex.defer(lambda _: end())


def _not_final(piece: TextPiece) -> bool:
    return not piece.final


def speak_request(
    router: SpeakRouter,
    first: ClientMessage,
    later: Observable[ClientMessage],
    clock: Callable[[], float],
    max_lead: float = MAX_LEAD_SECONDS,
    max_sentence_chars: int = DEFAULT_MAX_CHARS,
    telemetry: RequestTelemetry | None = None,
) -> Observable[Frame]:
    """One speak request: its first message and later ones in, its frames out.

    `telemetry` (the request's, from the socket) hears each provider attempt.
    """
    frames = FrameFactory(first.request_id, router.id, first.metadata, clock)
    if first.type == TEXT:
        return reactivex.of(
            frames.error(
                REQUEST_NOT_FOUND,
                f"no speak request {first.request_id!r} is in flight; "
                "start one with a 'speak' message",
            )
        )
    if first.type != SPEAK:
        return reactivex.of(
            frames.error(
                ErrorName.UNSUPPORTED_MESSAGE_TYPE,
                f"speak accepts 'speak', 'text' and 'cancel' messages, not {first.type!r}",
            )
        )
    spec = parse_speak(first.body, router.section)
    if isinstance(spec, Refusal):
        extra: dict[str, Any] = {"limit": spec.limit} if spec.limit else {}
        return reactivex.of(frames.error(spec.name, spec.message, **extra))
    valid: SpeakSpec = spec

    def answer(sched: abc.SchedulerBase, inputs: Observable[ClientMessage]) -> Observable[Frame]:
        output = _Output(valid.format, lambda: seconds(sched))
        health = StickyHealth(router.health)

        def segment(sentence: Sentence) -> Observable[Frame]:
            frames_ = _segment_frames(router, valid, sentence, frames, output, health, telemetry)
            return _paced(frames_, output, max_lead)

        pieces: Mailbox[TextPiece] = Mailbox()
        notices: Mailbox[Frame] = Mailbox()

        def route(item: TextPiece | Frame) -> None:
            if isinstance(item, TextPiece):
                pieces.on_next(item)
            else:
                notices.on_next(item)

        first_piece = TextPiece(valid.text, valid.final)
        events = _input_events(
            first_piece, inputs, held.release, frames, router.section.max_text_chars, output
        )

        def drive(
            observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            # routes the inputs into the two mailboxes; emits nothing itself
            return events.subscribe(
                route, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        driver: Observable[Frame] = Observable(drive)
        speech = pieces.observable.pipe(
            ops.take_while(_not_final, inclusive=True),
            split_sentences(max_sentence_chars),
            ops.concat_map(segment),
            ops.concat(_finish(frames, output)),
        )
        answer_frames = merge_now(speech, notices.observable, driver)
        return answer_frames.pipe(ops.finally_action(output.dispose))

    def answer_for(inputs: Observable[ClientMessage]) -> Observable[Frame]:
        return defer_scheduled(lambda sched: answer(sched, inputs), None, "speak")

    held = HeldMessages(later)
    answered = request_frames(
        frames,
        answer_for,
        held.messages,
        lambda error: speak_error_frame(frames, router.id, error),
    )
    return answered.pipe(ops.finally_action(held.dispose))


def speak_pipeline(
    router: SpeakRouter,
    clock: Callable[[], float],
    admission: Admission,
    max_lead: float = MAX_LEAD_SECONDS,
) -> Pipeline:
    """The whole speak socket: inbound messages in, merged frames out."""

    def start(first: ClientMessage, later: Observable[ClientMessage]) -> Observable[Frame]:
        telemetry = admission.request_telemetry(first.request_id)
        return speak_request(router, first, later, clock, max_lead, telemetry=telemetry)

    pipeline: Callable[[Observable[Inbound]], Observable[Frame]] = per_request(
        start,
        bad_message=admission.bad_message_frame(router.id, clock),
        admit=admission.admit_frame(router.id, clock),
        crashed=admission.crashed_frame(router.id, clock),
        on_active_change=admission.on_active_change,
    )
    return pipeline


# ---- the endpoint ------------------------------------------------------------------


def build_speak_provider(model: SpeakModelConfig, session: aiohttp.ClientSession) -> SpeechProvider:
    """The adapter for `model`'s provider block (local, openai or elevenlabs)."""
    block = model.provider_config
    if isinstance(block, EspeakConfig):
        from providers.tts_local import LocalSpeechProvider

        return LocalSpeechProvider(block)
    if isinstance(block, OpenAISpeechConfig):
        from providers.tts_openai import OpenAISpeechProvider

        return OpenAISpeechProvider(block, model.client, session)
    if isinstance(block, ElevenLabsConfig):
        from providers.tts_elevenlabs import ElevenLabsSpeechProvider

        return ElevenLabsSpeechProvider(block, model.client, session)
    raise ValueError(f"model {model.id!r}: no speak adapter for {model.provider_key!r}")


class SpeakEndpoint:
    """`GET /v1/speech/{router}/speak` of one speech router (a `SocketEndpoint`)."""

    default_type = SPEAK

    def __init__(
        self,
        router: SpeakRouter,
        clock: Callable[[], float],
        max_lead: float = MAX_LEAD_SECONDS,
    ) -> None:
        self.router = router
        self.router_id = router.id
        self._clock = clock
        self._max_lead = max_lead

    def pipeline(self, admission: Admission) -> Pipeline:
        """A fresh pipeline for one accepted socket."""
        return speak_pipeline(self.router, self._clock, admission, self._max_lead)

    def describe(self, now: float) -> dict[str, Any]:
        """Strategy, default format and voice, models with provider and health (no secrets)."""
        states: dict[str, str] = {}
        health_states = getattr(self.router.health, "health_states", None)
        if callable(health_states):
            states = health_states(now)
        section = self.router.section
        return {
            "strategy": section.strategy,
            "format": section.format.model_dump(),
            "voice": section.voice,
            "max_text_chars": section.max_text_chars,
            "models": [
                {
                    "id": m.id,
                    "provider": m.provider_key,
                    "model_name": self.router.providers[m.id].model_name,
                    "weight": m.weight,
                    "health": states.get(m.id),
                }
                for m in self.router.models
            ],
        }

    async def aclose(self) -> None:
        """Close every provider (the local engine's worker thread among them)."""
        for provider in self.router.providers.values():
            try:
                await provider.aclose()
            except Exception:
                log.exception("closing a speak provider failed", extra={"router": self.router_id})


def _health_event(router_id: str) -> Callable[[str, dict[str, Any]], None]:
    def on_event(event: str, fields: dict[str, Any]) -> None:
        log.warning(event, extra=safe_extra({"router": router_id, "endpoint": SPEAK, **fields}))

    return on_event


def build_speak_endpoint(router: SpeechRouterConfig, context: BuildContext) -> SpeakEndpoint:
    """A speech router's config + the app's context -> its speak endpoint."""
    if router.speak is None:
        raise ValueError(f"speech router {router.id!r} has no speak section")
    models = [m for m in router.speak.models if m.enabled]
    providers = {m.id: build_speak_provider(m, context.session) for m in models}
    health = build_model_router(
        f"speak:{router.id}",
        models,
        build_strategy(router.speak.strategy, models),
        context.clock(),
        _health_event(router.id),
        context.health_share,
    )
    speak_router = SpeakRouter(router, providers, health, random.Random(), context.scheduler)
    return SpeakEndpoint(speak_router, context.clock)
