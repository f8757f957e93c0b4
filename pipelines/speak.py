"""The speak websocket pipeline: text (or streamed LLM tokens) in, audio out.

Per request, a composition of (see docs/pipelines.md):

    inbound ─► per_request(request_id) ─► validate `speak` (protocol.speak)
      ─► request_frames (cancel, the terminal rule)
         ─► text_intake (first text, then `text` messages; notices)
            ├─► text pieces ─► speak_text (pipelines.speech_out: sentences,
            │     each paced, SpeakRouter.segment with failover, in order)
            │     ─► audio_frames (pipelines.speak_output: encode, binary audio,
            │        `segment` events, `model_unavailable` notices)
            │     ─► then_emit(`done`)
            └─► notices
      ─► merge_now ─► merge ─► the socket writer

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

Format notes: see `pipelines.speak_output` (streamed vs compressed encodings,
what `drop_bytes` counts).

Flow control: audio may run at most `MAX_LEAD_SECONDS` (10 s) ahead of real time
(counted from the first audio byte); the next sentence waits otherwise, so a long
text does not flood a client that plays in real time (or the socket's bounded
queue), and a cancel leaves little synthesized for nothing.

Ordering: every stage subscribes to its source in the same call that subscribes
it (`merge_now`, `enclose`, `then_emit`, never Rx's `concat` / `start_with`,
which subscribe a scheduler tick late), so a `text` or `cancel` sent right
behind its `speak` reaches the request's hot input before anything can miss it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.scheduler import ImmediateScheduler

from audio.sentences import DEFAULT_MAX_CHARS, TextPiece
from config.models import SpeechRouterConfig
from observability.telemetry import RequestTelemetry
from operators.ordered import merge_now, then_emit
from operators.per_request import per_request
from operators.scheduling import defer_scheduled, seconds
from operators.text_intake import TextState, text_intake
from pipelines.common import Admission, request_frames
from pipelines.endpoint import BuildContext, Pipeline
from pipelines.speak_output import SpeakOutput, audio_frames, ms
from pipelines.speak_router import SpeakRouter, build_speak_router
from pipelines.speech_out import speak_text
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.messages import ClientMessage, Inbound
from protocol.speak import REQUEST_NOT_FOUND, SPEAK, TEXT, Refusal, SpeakSpec, parse_speak
from protocol.speak_frames import done_frame, speak_error_frame
from resume.takeover import SPEAK_RESUMABLE_ENCODINGS, ResumedSpeech

log = logging.getLogger("sluice.speak")

WAV_HEADER_BYTES = 44
"""The streamable WAV header `audio.encode` sends before the first samples."""

MAX_LEAD_SECONDS = 10.0
"""Default for how far audio may run ahead of real time before synthesis waits."""


def _accept_first(
    frames: FrameFactory, first: ClientMessage, router: SpeakRouter
) -> SpeakSpec | Frame:
    """The spec of a first message that starts a request, else the frame refusing it."""
    if first.type == TEXT:
        return frames.error(
            REQUEST_NOT_FOUND,
            f"no speak request {first.request_id!r} is in flight; start one with a 'speak' message",
        )
    if first.type != SPEAK:
        return frames.error(
            ErrorName.UNSUPPORTED_MESSAGE_TYPE,
            f"speak accepts 'speak', 'text' and 'cancel' messages, not {first.type!r}",
        )
    spec = parse_speak(first.body, router.section)
    if isinstance(spec, Refusal):
        extra: dict[str, Any] = {"limit": spec.limit} if spec.limit else {}
        return frames.error(spec.name, spec.message, **extra)
    return spec


def _is_piece(item: TextPiece | Frame) -> bool:
    return isinstance(item, TextPiece)


def _is_notice(item: TextPiece | Frame) -> bool:
    return isinstance(item, Frame)


def speak_request(
    router: SpeakRouter,
    first: ClientMessage,
    later: Observable[ClientMessage],
    clock: Callable[[], float],
    max_lead: float = MAX_LEAD_SECONDS,
    max_sentence_chars: int = DEFAULT_MAX_CHARS,
    telemetry: RequestTelemetry | None = None,
    resumed: ResumedSpeech | None = None,
) -> Observable[Frame]:
    """One speak request: its first message and later ones in, its frames out.

    `telemetry` (the request's, from the socket) hears each provider attempt.
    `resumed`: the request was taken over from a gone instance (docs/resume.md):
    in pcm_s16le and wav its first `resumed.segments` sentences were spoken there; a
    non-terminal `model_unavailable` tells the client to drop the audio of the
    unfinished one, then the rest is spoken, counted in `done` with what was spoken
    before. A compressed format restarts: the notice drops all the audio the client
    has, and the whole text is spoken again into a new stream.
    """
    frames = FrameFactory(first.request_id, router.id, first.metadata, clock)
    accepted = _accept_first(frames, first, router)
    if isinstance(accepted, Frame):
        return reactivex.of(accepted)
    spec = accepted

    def answer(sched: abc.SchedulerBase, inputs: Observable[ClientMessage]) -> Observable[Frame]:
        output = SpeakOutput(spec.format, lambda: seconds(sched))
        text = TextState()
        skip = 0
        prefix: list[Frame] = []
        if resumed is not None and spec.format.encoding not in SPEAK_RESUMABLE_ENCODINGS:
            prefix = _restart_notice(frames, resumed, spec.format.encoding)
        elif resumed is not None:
            skip = resumed.segments
            output.continue_after(skip, resumed.audio_bytes, resumed.audio_sent)
            prefix = _takeover_notice(frames, resumed, spec.format.encoding)

        def wait() -> float:
            return output.wait_before_next(max_lead)

        def closing() -> Frame:
            if output.segments == 0:
                return frames.error(ErrorName.INVALID_REQUEST, "the text has nothing to speak")
            audio_ms = ms(output.audio_seconds())
            ttfa = output.time_to_first_audio_ms()
            return done_frame(frames, text.characters, audio_ms, ttfa, output.segments)

        speaking = speak_text(
            router,
            spec.voice,
            spec.format.sample_rate,
            first.request_id,
            telemetry,
            max_sentence_chars,
            wait,
            skip,
        )

        def body(events: Observable[TextPiece | Frame]) -> Observable[Frame]:
            pieces = cast(Observable[TextPiece], events.pipe(ops.filter(_is_piece)))
            notices = cast(Observable[Frame], events.pipe(ops.filter(_is_notice)))
            speech = pieces.pipe(
                speaking, audio_frames(output, frames, router.provider_id), then_emit(closing)
            )
            if prefix:
                first_frames = reactivex.from_iterable(prefix, ImmediateScheduler.singleton())
                return merge_now(first_frames, speech, notices)
            return merge_now(speech, notices)

        first_piece = TextPiece(spec.text, spec.final)
        intake = text_intake(first_piece, frames, router.section.max_text_chars, text)
        return inputs.pipe(intake, ops.publish(body), ops.finally_action(output.dispose))

    def answer_for(inputs: Observable[ClientMessage]) -> Observable[Frame]:
        return defer_scheduled(lambda sched: answer(sched, inputs), None, "speak")

    return request_frames(
        frames, answer_for, later, lambda error: speak_error_frame(frames, router.id, error)
    )


def _takeover_notice(frames: FrameFactory, resumed: ResumedSpeech, encoding: str) -> list[Frame]:
    """The `model_unavailable` that drops the audio of the sentence the gone instance
    had not finished (none when it had sent none of it)."""
    drop = resumed.partial_bytes
    if encoding == "wav" and resumed.segments == 0:
        drop = max(0, drop - WAV_HEADER_BYTES)  # the header stays: the audio goes on
    if drop <= 0:
        return []
    return [
        frames.error(
            ErrorName.MODEL_UNAVAILABLE,
            f"the instance speaking segment {resumed.segments} is gone; drop the last "
            f"{drop} audio bytes, this sentence and the rest are spoken again",
            finish_reason=None,
            model_id=resumed.model_id,
            segment_id=resumed.segments,
            drop_bytes=drop,
        )
    ]


def _restart_notice(frames: FrameFactory, resumed: ResumedSpeech, encoding: str) -> list[Frame]:
    """A compressed format taken over: the `model_unavailable` that drops every audio
    byte the client has (the gone encoder's stream cannot be continued, and the audio
    it held is lost); the answer is spoken again from segment 0 in one new stream."""
    drop = resumed.kept_bytes
    if drop <= 0 and resumed.segments == 0:
        return []  # nothing of it reached the client: the answer just starts
    return [
        frames.error(
            ErrorName.MODEL_UNAVAILABLE,
            f"the instance speaking this request is gone and its {encoding} stream cannot "
            f"be continued; drop all {drop} audio bytes received: the whole text is spoken "
            "again from segment 0 in a new stream",
            finish_reason=None,
            model_id=resumed.model_id,
            segment_id=0,
            drop_bytes=drop,
        )
    ]


def speak_pipeline(
    router: SpeakRouter,
    clock: Callable[[], float],
    admission: Admission,
    max_lead: float = MAX_LEAD_SECONDS,
) -> Pipeline:
    """The whole speak socket: inbound messages in, merged frames out."""

    def start(first: ClientMessage, later: Observable[ClientMessage]) -> Observable[Frame]:
        telemetry = admission.request_telemetry(first.request_id)
        taken = admission.resumed(first.request_id)
        resumed = taken if isinstance(taken, ResumedSpeech) else None
        return speak_request(
            router, first, later, clock, max_lead, telemetry=telemetry, resumed=resumed
        )

    pipeline: Callable[[Observable[Inbound]], Observable[Frame]] = per_request(
        start,
        bad_message=admission.bad_message_frame(router.id, clock),
        admit=admission.admit_frame(router.id, clock),
        crashed=admission.crashed_frame(router.id, clock),
        on_active_change=admission.on_active_change,
    )
    return pipeline


# ---- the endpoint ------------------------------------------------------------------


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


def build_speak_endpoint(router: SpeechRouterConfig, context: BuildContext) -> SpeakEndpoint:
    """A speech router's config + the app's context -> its speak endpoint."""
    speak_router = build_speak_router(
        router, context.session, context.scheduler, context.clock(), context.health_share
    )
    return SpeakEndpoint(speak_router, context.clock)
