"""The listen websocket (`GET /v1/speech/{router}/listen`): audio in, transcripts out.

Per request, a composition of (see docs/pipelines.md):

    inbound ─► per_request(request_id) ─► validate `listen` (protocol.listen)
      ─► request_frames (cancel, the terminal rule)
         ─► audio_intake (decode, downmix, resample to 16 kHz, limits, `end`)
            ├─► intake_pcm ─► hear (pipelines.speech_in: vad_segments, then
            │     ListenRouter.transcribe per segment with failover, in order)
            │     ─► speech_started / speech_ended / transcript frames
            └─► intake_notices (non-terminal notices)
         ─► then_emit(`done`) ─► merge ─► the socket writer

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
- `{"type": "audio_offset", "request_id", "offset"}`: the audio that follows starts
  at byte `offset` of the request's audio; bytes the request already has are skipped
  (a client resending its unacknowledged tail after a resume, docs/resume.md).

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
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import reactivex
from pydantic import ValidationError
from reactivex import Observable
from reactivex import operators as ops

from audio.pcm import (
    ENCODINGS,
    PCM_RATES,
    AudioDecoder,
    AudioFormatError,
    InputFormat,
    open_decoder,
)
from config.models import SpeechRouterConfig
from observability.telemetry import RequestTelemetry
from operators.audio_intake import (
    PIPELINE_RATE,
    IntakeItem,
    IntakeState,
    audio_intake,
    intake_notices,
    intake_pcm,
)
from operators.ordered import merge_now, then_emit
from operators.per_request import per_request
from operators.vad import SpeechEnded, SpeechStarted, VadOverrideError, resolve_vad
from pipelines.common import Admission, describe_validation_error, request_frames
from pipelines.endpoint import BuildContext, Pipeline
from pipelines.listen_router import (
    ListenRouter,
    SegmentTranscript,
    build_listen_router,
    listen_health,
)
from pipelines.speech_in import Heard, hear
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.listen import AUDIO, AUDIO_OFFSET, END, LISTEN, ListenErrorName, ListenRequestIn
from protocol.listen_frames import boundary_frame, error_frame, terminal_frame, transcript_frame
from protocol.messages import ClientMessage, Inbound
from providers.stt_registry import build_stt_provider
from providers.stt_types import SttProvider
from resume.takeover import LISTEN_RESUMABLE_ENCODINGS, ResumedListen

WAV_HEADER_BYTES = 44
"""The WAV header a client's audio offsets count before the first sample."""


class Timeline:
    """A listen run taken over from a gone instance: its audio starts `base_ms` into the
    request's audio and its segments after `first_segment` (docs/resume.md section 7),
    so its events are moved onto the request's timeline."""

    def __init__(
        self, resumed: ResumedListen, request: ListenRequestIn, state: IntakeState
    ) -> None:
        fmt = request.format
        self.first_segment = resumed.next_segment
        self.acked_ms = resumed.acked_ms
        self.encoding = fmt.encoding
        self.rate = fmt.sample_rate or 0
        self.channels = fmt.channels or 1
        self.declared = request.input_format()
        self.header = WAV_HEADER_BYTES if fmt.encoding == "wav" else 0
        self.base_ms = 0
        self.state = state
        state.segments = resumed.next_segment

    def rebase(self, offset: int | None) -> tuple[AudioDecoder, int]:
        """The resent audio starts at byte `offset` of the request's audio (None: at the
        last final transcript's end) -> the decoder for the run's audio and the byte of
        the request's audio the run starts at (no earlier than that end: audio before
        it was transcribed); counts the audio before the run."""
        per_ms = self.rate * self.channels * 2 / 1000
        acked = self.header + round(self.acked_ms * per_ms) if self.acked_ms else 0
        offset = acked if offset is None else max(offset, acked)
        self.base_ms = round(max(0, offset - self.header) / per_ms)
        self.state.samples = self.base_ms * PIPELINE_RATE // 1000
        if offset == 0:
            return open_decoder(self.declared, PIPELINE_RATE), offset
        # past a WAV header: raw samples of the declared rate and channels
        raw = InputFormat("pcm_s16le", self.rate, self.channels)
        return open_decoder(raw, PIPELINE_RATE), offset

    def boundary(self, event: SpeechStarted | SpeechEnded) -> SpeechStarted | SpeechEnded:
        """A VAD event of this run on the request's timeline."""
        segment_id = event.segment_id + self.first_segment
        if isinstance(event, SpeechStarted):
            return dataclasses.replace(
                event, segment_id=segment_id, start_ms=event.start_ms + self.base_ms
            )
        return dataclasses.replace(event, segment_id=segment_id, end_ms=event.end_ms + self.base_ms)

    def transcript(self, item: Any) -> Any:
        """A transcript of this run on the request's timeline (a Reset is unchanged)."""
        if not isinstance(item, SegmentTranscript):
            return item
        return dataclasses.replace(
            item,
            segment_id=item.segment_id + self.first_segment,
            start_ms=item.start_ms + self.base_ms,
            end_ms=item.end_ms + self.base_ms,
        )


def _not_resumable(request: ListenRequestIn) -> str | None:
    """Why a listen request taken over cannot run again, or None."""
    fmt = request.format
    if fmt.encoding not in LISTEN_RESUMABLE_ENCODINGS:
        return f"{fmt.encoding} audio cannot be resent from an offset"
    if fmt.sample_rate is None:
        return "its format did not name sample_rate, so the resent audio cannot be placed"
    return None


def _refuse_first(frames: FrameFactory, first: ClientMessage) -> Frame | None:
    """The frame that answers a first message that cannot start a request, else None."""
    if first.type in (AUDIO, END, AUDIO_OFFSET):
        return frames.error(
            ListenErrorName.UNKNOWN_REQUEST,
            f"no active request {first.request_id!r}: send 'listen' first "
            f"(this {first.type!r} was ignored)",
            finish_reason=None,
        )
    if first.type != LISTEN:
        return frames.error(
            ErrorName.UNSUPPORTED_MESSAGE_TYPE,
            f"listen accepts 'listen', 'end', 'cancel' and binary audio, not {first.type!r}",
        )
    return None


def listen_request(
    router: ListenRouter,
    first: ClientMessage,
    later: Observable[ClientMessage],
    clock: Callable[[], float],
    telemetry: RequestTelemetry | None = None,
    resumed: ResumedListen | None = None,
) -> Observable[Frame]:
    """One listen request: its first message and later ones in, its frames out.

    `telemetry` (when the app has it) hears each provider attempt and the time
    from each segment's end to its final transcript. `resumed`: the request was
    taken over from a gone instance: a fresh run whose audio (resent behind an
    `audio_offset`) and events sit on the request's timeline (`Timeline`).
    """
    frames = FrameFactory(first.request_id, router.id, first.metadata, clock)
    refusal = _refuse_first(frames, first)
    if refusal is not None:
        return reactivex.of(refusal)
    try:
        request = ListenRequestIn.model_validate(first.body)
    except ValidationError as error:
        return reactivex.of(
            frames.error(ErrorName.PAYLOAD_PARSE_ERROR, describe_validation_error(error))
        )
    section = router.section
    if resumed is not None and (why := _not_resumable(request)) is not None:
        return reactivex.of(
            frames.error(
                ErrorName.REQUEST_LOST,
                f"the instance that ran this request is gone and {why}; send it again",
            )
        )
    try:
        settings = resolve_vad(section.vad, request.vad)
        decoder = open_decoder(request.input_format(), PIPELINE_RATE)
    except VadOverrideError as error:
        return reactivex.of(frames.error(ErrorName.INVALID_REQUEST, str(error)))
    except AudioFormatError as error:
        return reactivex.of(frames.error(error.name, str(error)))
    max_samples = int(section.max_audio_seconds * PIPELINE_RATE)
    listening = hear(router, settings, request.language, request.interim_results, telemetry, clock)

    def answer_for(inputs: Observable[ClientMessage]) -> Observable[Frame]:
        state = IntakeState()
        timeline = None if resumed is None else Timeline(resumed, request, state)

        def to_frame(heard: Heard) -> Frame:
            if isinstance(heard, SpeechStarted | SpeechEnded):
                if isinstance(heard, SpeechEnded):
                    state.segments += 1
                if timeline is not None:
                    heard = timeline.boundary(heard)
                return boundary_frame(frames, heard)
            if timeline is not None:
                item = timeline.transcript(heard.item)
                return transcript_frame(frames, item, heard.segment_id + timeline.first_segment)
            return transcript_frame(frames, heard.item, heard.segment_id)

        def body(items: Observable[IntakeItem]) -> Observable[Frame]:
            answer = items.pipe(intake_pcm, listening, ops.map(to_frame))

            def with_notices(main: Observable[Frame]) -> Observable[Frame]:
                notices = items.pipe(intake_notices, ops.take_until(main.pipe(ops.count())))
                return merge_now(main, notices)

            return answer.pipe(ops.publish(with_notices))

        def closing() -> Frame:
            return terminal_frame(frames, state, section.max_audio_seconds)

        rebase = None if timeline is None else timeline.rebase
        intake = inputs.pipe(
            audio_intake(decoder, request, frames, max_samples, state, rebase=rebase)
        )
        return intake.pipe(ops.publish(body), then_emit(closing))

    return request_frames(
        frames, answer_for, later, lambda error: error_frame(frames, router.id, error)
    )


def listen_pipeline(
    router: ListenRouter, clock: Callable[[], float], admission: Admission
) -> Pipeline:
    """The whole listen socket: inbound messages in, merged frames out."""

    def start(first: ClientMessage, later: Observable[ClientMessage]) -> Observable[Frame]:
        telemetry = admission.request_telemetry(first.request_id)
        taken = admission.resumed(first.request_id)
        resumed = taken if isinstance(taken, ResumedListen) else None
        return listen_request(router, first, later, clock, telemetry, resumed)

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
        self.health = listen_health(router, context.clock(), context.health_share)
        self.router = build_listen_router(router, self.providers, self.health, context.scheduler)
        self._clock = context.clock

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
