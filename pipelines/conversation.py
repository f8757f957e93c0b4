"""A voice conversation: client inputs in, typed conversation events out.

    inputs ─┬─► UserAudio (turn detection on) ─► hear (VAD + the listen router)
            │      SpeechStarted ─► barge-in: the reply is disposed (chat and speak
            │      calls cancelled), ReplyInterrupted + TurnEnded
            │      Transcribed (final) ─► the user's turn ─► reply when the user is
            │      quiet and every open segment has its final
            ├─► UserAudio (turn detection off) ─► buffer ─► CommitAudio ─►
            │      ListenRouter.transcribe as one segment ─► a user message
            ├─► UserText / CreateResponse / CancelResponse / Played / Configure
            └─► reply: history ─► chat (ChatRouter.stream) ─► ReplyText deltas
                   └─► text pieces ─► speak (speak_text) ─► ReplySentence,
                       ReplyAudio, ReplyAudioDropped, ReplySegment ─► TurnEnded

`converse(parts, settings)` is the whole of it as one operator, independent of any
websocket envelope: the converse endpoint (`pipelines.converse`) maps its frames
onto it, and the OpenAI Realtime layer maps its events onto the same inputs and
outputs. docs/pipelines.md describes the interface.

Decisions (docs/conversations.md says them to users):
- A final transcript is a user turn. The reply starts once the user is quiet
  (no segment open) and every segment has its final; several finals in a row
  make one turn.
- History: user and assistant messages, the oldest dropped past
  `max_history`; the instructions are always sent first.
- Barge-in: `SpeechStarted` while a reply runs disposes the reply at once. The
  history keeps what was heard: up to the last `Played` position when the
  client reported one during this reply, else up to what was sent (the partial
  sentence cut at the word nearest its share of the audio).
- A chat `Reset` (a model broke mid-answer under `mid_stream: restart`): the text
  already spoken stays; the next model's answer is skipped for as many characters.
- A failing reply (every chat or speak model unavailable) ends its turn with
  `TurnEnded(reason="error")`; the conversation goes on. A failing listen stage
  ends the conversation with the error.
- Inputs ending (`end`): the open segment is flushed, its turn answered, and the
  stream completes once no reply runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.subject import Subject

from audio.sentences import Sentence, TextPiece
from operators.audio_intake import PIPELINE_RATE
from operators.failover import Reset
from operators.ordered import merge_now
from operators.vad import SpeechEnded, SpeechStarted
from pipelines.chat_router import ChatChunk, ChatEvent
from pipelines.conversation_types import (
    CancelResponse,
    ChatRestarted,
    ClearAudio,
    CommitAudio,
    Configure,
    ConversationEvent,
    ConversationInput,
    ConversationParts,
    ConversationSettings,
    ConversationStats,
    CreateResponse,
    Notice,
    Played,
    ReplyAudio,
    ReplyAudioDropped,
    ReplyInterrupted,
    ReplySegment,
    ReplySentence,
    ReplyStarted,
    ReplyText,
    TurnEnded,
    UserAudio,
    UserText,
    UserTurn,
)
from pipelines.listen_router import SegmentTranscript
from pipelines.speak_router import SegmentAudio
from pipelines.speech_in import Heard, Transcribed
from pipelines.speech_out import SentenceEnd, Spoken
from protocol.chat import ChatRequest
from providers.stt_types import SegmentAudio as HeardAudio

# ---- the conversation --------------------------------------------------------------


@dataclass
class _SpokenSentence:
    sentence: Sentence
    start: int  # sample of the reply audio where it starts
    samples: int = 0
    model_id: str | None = None
    done: bool = False


@dataclass
class _Reply:
    turn_id: int
    user_text: str
    start: int  # sample of the conversation's reply audio where this reply starts
    played: int | None = None
    sentences: list[_SpokenSentence] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


SECONDS_PER_CHAR = 0.06
"""Estimated speaking time per character of a sentence whose audio is not complete."""


def spoken_text(sentences: list[_SpokenSentence], cutoff: int, rate: int) -> str:
    """A reply's sentences and a cut-off sample in; the text heard by then out.

    A sentence cut short keeps the words in its share of its audio (whose length
    is estimated at `SECONDS_PER_CHAR` while it is still being synthesized).
    """
    kept: list[str] = []
    for item in sentences:
        if item.start >= cutoff:
            break
        total = item.samples
        if not item.done:
            total = max(total, int(len(item.sentence.text) * SECONDS_PER_CHAR * rate))
        if item.done and item.start + total <= cutoff:
            kept.append(item.sentence.text)
            continue
        words = item.sentence.text.split()
        share = (cutoff - item.start) / total if total else 0.0
        count = round(len(words) * min(1.0, share))
        if count:
            kept.append(" ".join(words[:count]))
        break
    return " ".join(kept)


def converse(
    parts: ConversationParts,
    settings: ConversationSettings,
    stats: ConversationStats | None = None,
) -> Callable[[Observable[ConversationInput]], Observable[ConversationEvent]]:
    """Client inputs in; conversation events out (module doc).

    inputs: -a-a-a-a-a-a-a-a-a-a-a------|     (a: UserAudio)
    events: ---S----E-T-U-R-x-q-A-G-Z-|     (S/E: speech started/ended, T: final
            transcript, U: UserTurn, R: ReplyStarted, x: ReplyText, q: ReplySentence,
            A: ReplyAudio, G: ReplySegment, Z: TurnEnded)
    Errors: the listen stage failing errors the stream; a reply failing ends its
    turn (`TurnEnded(reason="error")`).
    """
    counters = stats if stats is not None else ConversationStats()

    def operator(inputs: Observable[ConversationInput]) -> Observable[ConversationEvent]:
        def subscribe(
            observer: abc.ObserverBase[ConversationEvent],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            return _Conversation(parts, settings, counters, observer, scheduler).start(inputs)

        return Observable(subscribe)

    return operator


class _Conversation:
    """The state of one conversation between its subscription and its end."""

    def __init__(
        self,
        parts: ConversationParts,
        settings: ConversationSettings,
        stats: ConversationStats,
        observer: abc.ObserverBase[ConversationEvent],
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        self.parts = parts
        self.settings = ConversationSettings(
            settings.instructions, settings.voice, settings.max_history, settings.turn_detection
        )
        self.stats = stats
        self.observer = observer
        self.scheduler = scheduler
        self.history: list[dict[str, str]] = []
        self.pending: list[str] = []  # finals of the user's turn so far
        self.open_segments: set[int] = set()
        self.speaking = False
        self.turns = 0
        self.reply: _Reply | None = None
        self.reply_subscription = SerialDisposable()
        self.transcriptions = CompositeDisposable()
        self.manual_jobs = 0
        self.buffer = bytearray()
        self.manual_segments = 0
        self.audio_in = Subject[bytes]()
        self.inputs_done = False
        self.hearing_done = False
        self.stopped = False
        self.played: int | None = None
        self.respond_instructions: str | None = None

    # ---- life -----------------------------------------------------------------

    def start(self, inputs: Observable[ConversationInput]) -> abc.DisposableBase:
        heard = self.audio_in.pipe(self.parts.hear).subscribe(
            self.on_heard, self.fail, self.on_hearing_done, scheduler=self.scheduler
        )
        source = inputs.subscribe(
            self.on_input, self.fail, self.on_inputs_done, scheduler=self.scheduler
        )
        return CompositeDisposable(
            source, heard, self.reply_subscription, self.transcriptions, Disposable(self.stop)
        )

    def stop(self) -> None:
        self.stopped = True

    def emit(self, event: ConversationEvent) -> None:
        if not self.stopped:
            self.observer.on_next(event)

    def fail(self, error: Exception) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.reply_subscription.dispose()
        self.transcriptions.dispose()
        self.observer.on_error(error)

    def maybe_complete(self) -> None:
        if (
            self.inputs_done
            and self.hearing_done
            and self.reply is None
            and self.manual_jobs == 0
            and not self.stopped
        ):
            self.stopped = True
            self.observer.on_completed()

    def on_inputs_done(self) -> None:
        self.inputs_done = True
        self.audio_in.on_completed()  # flushes the open segment
        self.maybe_complete()

    def on_hearing_done(self) -> None:
        self.hearing_done = True
        self.open_segments.clear()
        self.speaking = False
        self.maybe_start_reply()
        self.maybe_complete()

    # ---- inputs ---------------------------------------------------------------

    def on_input(self, item: ConversationInput) -> None:
        if isinstance(item, UserAudio):
            self.stats.audio_in_samples += len(item.pcm) // 2
            if self.settings.turn_detection:
                self.audio_in.on_next(item.pcm)
            else:
                self.buffer.extend(item.pcm)
        elif isinstance(item, Played):
            self.played = item.ms
            if self.reply is not None:
                self.reply.played = item.ms
        elif isinstance(item, UserText):
            self.pending.append(item.text)
            if item.respond:
                self.maybe_start_reply()
            else:
                self.take_user_turn()
        elif isinstance(item, CommitAudio):
            self.commit()
        elif isinstance(item, ClearAudio):
            self.buffer.clear()
        elif isinstance(item, CreateResponse):
            self.create_response(item)
        elif isinstance(item, CancelResponse):
            if self.reply is None:
                self.emit(Notice("no_active_reply", "there is no reply to cancel"))
            else:
                self.interrupt("cancelled")
        else:
            self.configure(item)

    def configure(self, item: Configure) -> None:
        if item.instructions is not None:
            self.settings.instructions = item.instructions
        if item.voice is not None:
            self.settings.voice = item.voice
        if item.turn_detection is not None:
            self.settings.turn_detection = item.turn_detection

    def create_response(self, item: CreateResponse) -> None:
        if self.reply is not None:
            self.emit(Notice("reply_in_progress", "a reply is already running; cancel it first"))
            return
        self.take_user_turn()
        if not self.history or self.history[-1]["role"] != "user":
            self.emit(Notice("nothing_to_answer", "the conversation has no user message to answer"))
            return
        self.respond_instructions = item.instructions
        self.start_reply(self.history[-1]["content"])

    def commit(self) -> None:
        if not self.buffer:
            self.emit(Notice("audio_buffer_empty", "there is no buffered audio to commit"))
            return
        segment_id = self.manual_segments
        self.manual_segments += 1
        audio = HeardAudio(segment_id, 0, 0, PIPELINE_RATE)
        audio.append(bytes(self.buffer))
        end_ms = len(self.buffer) * 1000 // (2 * PIPELINE_RATE)
        audio.finish(end_ms, end_ms)
        self.buffer.clear()
        self.manual_jobs += 1

        def on_next(item: SegmentTranscript | Reset) -> None:
            self.emit(Transcribed(segment_id, item))
            if isinstance(item, SegmentTranscript) and item.is_final and item.text.strip():
                self.pending.append(item.text.strip())
                self.take_user_turn()

        def on_error(error: Exception) -> None:
            self.manual_jobs -= 1
            self.emit(Notice("transcription_failed", f"the committed audio was not heard: {error}"))
            self.maybe_complete()

        def on_completed() -> None:
            self.manual_jobs -= 1
            self.maybe_complete()

        self.transcriptions.add(
            self.parts.transcribe(audio).subscribe(
                on_next, on_error, on_completed, scheduler=self.scheduler
            )
        )

    # ---- hearing --------------------------------------------------------------

    def on_heard(self, item: Heard) -> None:
        if isinstance(item, SpeechStarted):
            self.speaking = True
            self.open_segments.add(item.segment_id)
            self.emit(item)
            if self.reply is not None:
                self.interrupt("barge_in")
        elif isinstance(item, SpeechEnded):
            self.speaking = False
            self.emit(item)
        else:
            self.emit(item)
            transcript = item.item
            if isinstance(transcript, SegmentTranscript) and transcript.is_final:
                self.open_segments.discard(item.segment_id)
                if transcript.text.strip():
                    self.pending.append(transcript.text.strip())
                self.maybe_start_reply()

    # ---- turns ----------------------------------------------------------------

    def take_user_turn(self) -> str | None:
        """The pending finals become one user message (and a `UserTurn`)."""
        if not self.pending:
            return None
        text = " ".join(self.pending)
        self.pending.clear()
        self.turns += 1
        self.stats.turns += 1
        self.remember("user", text)
        self.emit(UserTurn(self.turns, text))
        return text

    def remember(self, role: str, text: str) -> None:
        if self.history and self.history[-1]["role"] == role:
            self.history[-1] = {"role": role, "content": f"{self.history[-1]['content']} {text}"}
        else:
            self.history.append({"role": role, "content": text})
        limit = self.settings.max_history
        if len(self.history) > limit:
            del self.history[: len(self.history) - limit]

    def maybe_start_reply(self) -> None:
        if (
            self.stopped
            or self.reply is not None
            or not self.pending
            or self.speaking
            or self.open_segments
        ):
            return
        text = self.take_user_turn()
        if text is not None:
            self.start_reply(text)

    def chat_request(self) -> ChatRequest:
        instructions = self.respond_instructions or self.settings.instructions
        self.respond_instructions = None
        messages: list[dict[str, Any]] = []
        if instructions:
            messages.append({"role": "system", "content": instructions})
        messages.extend(self.history)
        return ChatRequest.model_validate(
            {"message": messages[-1], "message_history": messages[:-1]}
        )

    def start_reply(self, user_text: str) -> None:
        turn_id = self.turns
        reply = _Reply(turn_id, user_text, self.stats.audio_out_samples)
        self.reply = reply
        self.emit(ReplyStarted(turn_id))
        try:
            request = self.chat_request()
        except ValueError as error:
            self.end_reply(reply, "error", error)
            return

        def body(shared: Observable[_Tracked]) -> Observable[ConversationEvent]:
            return self._reply_body(reply, shared)

        tracked: Observable[_Tracked] = self.parts.chat(request).pipe(
            ops.map(_text_tracker(turn_id))
        )
        events = tracked.pipe(ops.publish(body))

        def on_error(error: Exception) -> None:
            self.end_reply(reply, "error", error)

        def on_completed() -> None:
            self.end_reply(reply, "complete")

        subscription = events.subscribe(
            self.on_reply_event, on_error, on_completed, scheduler=self.scheduler
        )
        if self.reply is reply:
            self.reply_subscription.disposable = subscription
        else:
            subscription.dispose()

    def _reply_body(
        self, reply: _Reply, shared: Observable[_Tracked]
    ) -> Observable[ConversationEvent]:
        texts = cast(
            Observable[ConversationEvent], shared.pipe(ops.map(_said), ops.filter(_is_some))
        )
        pieces = cast(Observable[TextPiece], shared.pipe(ops.map(_piece), ops.filter(_is_some)))

        def to_event(item: Spoken) -> ConversationEvent:
            return self.spoken(reply, item)

        spoken = pieces.pipe(self.parts.speak(self.settings.voice), ops.map(to_event))
        return merge_now(texts, spoken)

    def spoken(self, reply: _Reply, item: Spoken) -> ConversationEvent:
        rate = self.parts.output_rate
        if isinstance(item, Sentence):
            start = self.stats.audio_out_samples
            reply.sentences.append(_SpokenSentence(item, start))
            return ReplySentence(reply.turn_id, item, _ms(start, rate))
        current = reply.sentences[-1]
        if isinstance(item, SegmentAudio):
            current.samples += item.samples.size
            current.model_id = item.model_id
            self.stats.audio_out_samples += item.samples.size
            return ReplyAudio(reply.turn_id, item.samples, item.model_id)
        if isinstance(item, Reset):
            dropped = current.samples
            current.samples = 0
            self.stats.audio_out_samples -= dropped
            return ReplyAudioDropped(reply.turn_id, item.model_id, dropped, item.error)
        assert isinstance(item, SentenceEnd)
        current.done = True
        reply.text.append(item.sentence.text)
        model_id = current.model_id
        provider = self.parts.provider_id(model_id) if model_id else None
        return ReplySegment(
            reply.turn_id,
            item.sentence,
            model_id,
            provider,
            _ms(current.start, rate),
            _ms(current.samples, rate),
            current.samples,
        )

    def on_reply_event(self, event: ConversationEvent) -> None:
        self.emit(event)

    def interrupt(self, reason: Literal["barge_in", "cancelled"]) -> None:
        reply = self.reply
        assert reply is not None
        self.reply_subscription.disposable = Disposable()  # cancels chat and speak at once
        rate = self.parts.output_rate
        sent = self.stats.audio_out_samples
        cutoff = sent
        if reply.played is not None:
            cutoff = max(reply.start, min(sent, reply.played * rate // 1000))
        text = spoken_text(reply.sentences, cutoff, rate)
        # what was sent beyond the cut-off is not counted as reply audio any more
        self.stats.audio_out_samples = cutoff
        self.emit(
            ReplyInterrupted(
                reply.turn_id, _ms(cutoff, rate), _ms(sent, rate), text, reason, cutoff, sent
            )
        )
        self.end_reply(reply, "interrupted", spoken=text)

    def end_reply(
        self,
        reply: _Reply,
        reason: Literal["complete", "interrupted", "error"],
        error: BaseException | None = None,
        spoken: str | None = None,
    ) -> None:
        if self.reply is not reply:
            return
        self.reply = None
        text = spoken if spoken is not None else " ".join(reply.text)
        if reason != "error" and text:
            self.remember("assistant", text)
        self.emit(TurnEnded(reply.turn_id, reason, reply.user_text, text, error))
        self.maybe_start_reply()
        self.maybe_complete()


def _ms(samples: int, rate: int) -> int:
    return samples * 1000 // rate


_Tracked = tuple[ReplyText | ChatRestarted | None, TextPiece | None]


def _text_tracker(turn_id: int) -> Callable[[ChatEvent], _Tracked]:
    """Chat events -> (a reply-text event, a text piece to speak); after a restart
    the next model's answer is skipped for as many characters as were passed on."""
    state = {"emitted": 0, "skip": 0}

    def track(event: ChatEvent) -> _Tracked:
        if isinstance(event, Reset):
            state["skip"] = state["emitted"]
            return ChatRestarted(turn_id, event.model_id), None
        assert isinstance(event, ChatChunk)
        text = event.delta.content or ""
        if state["skip"]:
            cut = min(state["skip"], len(text))
            text = text[cut:]
            state["skip"] -= cut
        state["emitted"] += len(text)
        final = event.delta.finish_reason is not None
        said = ReplyText(turn_id, text, event.model) if text else None
        piece = TextPiece(text, True) if final else TextPiece(text) if text else None
        return said, piece

    return track


def _said(item: _Tracked) -> ReplyText | ChatRestarted | None:
    return item[0]


def _piece(item: _Tracked) -> TextPiece | None:
    return item[1]


def _is_some(item: object) -> bool:
    return item is not None
