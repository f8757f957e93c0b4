"""A voice conversation: client inputs in, typed conversation events out.

    inputs ─┬─► UserAudio (turn detection on) ─► hear (VAD + the listen router)
            │      SpeechStarted ─► barge-in: the reply is disposed (chat and speak
            │      calls cancelled), ReplyInterrupted + TurnEnded
            │      Transcribed (final) ─► the user's turn ─► reply when the user is
            │      quiet and every open segment has its final
            ├─► UserAudio (turn detection off) ─► buffer ─► CommitAudio ─►
            │      ListenRouter.transcribe as one segment ─► a user message
            ├─► UserText / CreateResponse / CancelResponse / Played / Configure
            ├─► ToolResult ─► the history's tool message ─► a reply once every call
            │      of the last reply is answered
            └─► reply: history ─► chat (ChatRouter.stream) ─► ReplyText deltas
                   ├─► text pieces ─► speak (speak_text) ─► ReplySentence,
                   │   ReplyAudio, ReplyAudioDropped, ReplySegment ─► TurnEnded
                   └─► whole tool calls ─► ReplyToolCalls (no audio)

`converse(parts, settings)` is the whole of it as one operator, independent of any
websocket envelope: the converse endpoint (`pipelines.converse`) maps its frames
onto it, and the OpenAI Realtime layer maps its events onto the same inputs and
outputs. docs/pipelines.md describes the interface.

The decisions (turns, history, barge-in, failover, errors) are in
docs/conversations.md; the reply's bookkeeping is in `pipelines.reply_tracking`.
"""

from __future__ import annotations

from collections.abc import Callable
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
from pipelines.conversation_types import (
    CancelResponse,
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
    ReplyToolCalls,
    ToolResult,
    TurnEnded,
    UserAudio,
    UserText,
    UserTurn,
)
from pipelines.listen_router import SegmentTranscript
from pipelines.reply_tracking import (
    Reply,
    SpokenSentence,
    Tracked,
    is_some,
    ms,
    piece,
    said,
    spoken_text,
    text_tracker,
    tool_calls,
)
from pipelines.speak_router import SegmentAudio
from pipelines.speech_in import Heard, Transcribed
from pipelines.speech_out import SentenceEnd, Spoken
from protocol.chat import ChatRequest
from providers.stt_types import SegmentAudio as HeardAudio
from providers.types import ToolCall

# ---- the conversation --------------------------------------------------------------


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
            settings.instructions,
            settings.voice,
            settings.max_history,
            settings.turn_detection,
            settings.tools,
            settings.tool_choice,
        )
        self.stats = stats
        self.observer = observer
        self.scheduler = scheduler
        self.history: list[dict[str, Any]] = []
        self.open_calls: dict[str, ToolCall] = {}  # the last reply's calls without a result
        self.calls_user_text = ""
        self.pending: list[str] = []  # finals of the user's turn so far
        self.open_segments: set[int] = set()
        self.speaking = False
        self.turns = 0
        self.reply: Reply | None = None
        self.finished: Reply | None = None  # the last reply, wholly sent, maybe still playing
        self.reply_subscription = SerialDisposable()
        self.transcriptions = CompositeDisposable()
        self.manual_jobs = 0
        self.buffer = bytearray()
        self.manual_segments = 0
        self.audio_in = Subject[bytes]()
        self.inputs_done = False
        self.hearing_done = False
        self.stopped = False
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
            latest = self.reply or self.finished
            if latest is not None:
                latest.played = item.ms
                latest.played_at = self.now()
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
        elif isinstance(item, ToolResult):
            self.tool_result(item)
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
        if item.tools is not None:
            self.settings.tools = item.tools
        if item.tool_choice is not None:
            self.settings.tool_choice = item.tool_choice

    def tool_result(self, item: ToolResult) -> None:
        """A call's result joins the history; the last one (with `respond`) starts the reply."""
        if self.open_calls.pop(item.call_id, None) is None:
            self.emit(
                Notice(
                    "unknown_tool_call",
                    f"no tool call {item.call_id!r} is waiting for a result (only the calls of "
                    "the last reply are, until the user's next turn or a respond)",
                )
            )
            return
        self.history.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        if item.respond and not self.open_calls and self.reply is None and not self.stopped:
            self.start_reply(self.calls_user_text)

    def close_calls(self) -> None:
        """The last reply's calls still without a result leave the history (a new user
        turn or a respond goes on without them)."""
        if not self.open_calls:
            return
        for index in range(len(self.history) - 1, -1, -1):
            message = self.history[index]
            if message["role"] == "assistant" and message.get("tool_calls"):
                kept = [c for c in message["tool_calls"] if c["id"] not in self.open_calls]
                if kept:
                    message["tool_calls"] = kept
                elif message["content"]:
                    del message["tool_calls"]
                else:
                    del self.history[index]
                break
        self.open_calls.clear()

    def create_response(self, item: CreateResponse) -> None:
        if self.reply is not None:
            self.emit(Notice("reply_in_progress", "a reply is already running; cancel it first"))
            return
        self.take_user_turn()
        answered = (
            self.calls_user_text
            if self.history[-1:] and (self.history[-1]["role"] == "tool")
            else None
        )
        self.close_calls()
        if not self.history or self.history[-1]["role"] not in ("user", "tool"):
            self.emit(Notice("nothing_to_answer", "the conversation has no user message to answer"))
            return
        self.respond_instructions = item.instructions
        self.start_reply(answered if answered is not None else self.history[-1]["content"])

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
            elif self.finished is not None:
                self.interrupt_playback(self.finished)
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
        self.close_calls()
        self.turns += 1
        self.stats.turns += 1
        self.remember("user", text)
        self.emit(UserTurn(self.turns, text))
        return text

    def remember(self, role: str, text: str, calls: tuple[ToolCall, ...] = ()) -> None:
        last = self.history[-1] if self.history else None
        if last is not None and last["role"] == role and not calls and "tool_calls" not in last:
            self.history[-1] = {"role": role, "content": f"{last['content']} {text}"}
        elif calls:
            self.history.append(
                {"role": role, "content": text, "tool_calls": [c.to_json() for c in calls]}
            )
        else:
            self.history.append({"role": role, "content": text})
        limit = self.settings.max_history
        if len(self.history) > limit:
            del self.history[: len(self.history) - limit]
        # a tool result never opens the history without the call it answers
        while self.history and self.history[0]["role"] == "tool":
            del self.history[0]

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
        body: dict[str, Any] = {"message": messages[-1], "message_history": messages[:-1]}
        if self.settings.tools:
            body["tools"] = list(self.settings.tools)
            if self.settings.tool_choice is not None:
                body["tool_choice"] = self.settings.tool_choice
        return ChatRequest.model_validate(body)

    def start_reply(self, user_text: str) -> None:
        turn_id = self.turns
        reply = Reply(turn_id, user_text, self.stats.audio_out_samples)
        self.reply = reply
        self.emit(ReplyStarted(turn_id))
        try:
            request = self.chat_request()
        except ValueError as error:
            self.end_reply(reply, "error", error)
            return

        def body(shared: Observable[Tracked]) -> Observable[ConversationEvent]:
            return self._reply_body(reply, shared)

        tracked: Observable[Tracked] = self.parts.chat(request).pipe(ops.map(text_tracker(turn_id)))
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
        self, reply: Reply, shared: Observable[Tracked]
    ) -> Observable[ConversationEvent]:
        texts = cast(Observable[ConversationEvent], shared.pipe(ops.map(said), ops.filter(is_some)))
        calls = cast(
            Observable[ConversationEvent], shared.pipe(ops.map(tool_calls), ops.filter(is_some))
        )
        pieces = cast(Observable[TextPiece], shared.pipe(ops.map(piece), ops.filter(is_some)))

        def to_event(item: Spoken) -> ConversationEvent:
            return self.spoken(reply, item)

        spoken = pieces.pipe(self.parts.speak(self.settings.voice), ops.map(to_event))
        return merge_now(texts, calls, spoken)

    def spoken(self, reply: Reply, item: Spoken) -> ConversationEvent:
        rate = self.parts.output_rate
        if isinstance(item, Sentence):
            start = self.stats.audio_out_samples
            reply.sentences.append(SpokenSentence(item, start))
            return ReplySentence(reply.turn_id, item, ms(start, rate))
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
            ms(current.start, rate),
            ms(current.samples, rate),
            current.samples,
        )

    def on_reply_event(self, event: ConversationEvent) -> None:
        if isinstance(event, ReplyToolCalls) and self.reply is not None:
            self.reply.calls = event.calls
        self.emit(event)

    def interrupt(self, reason: Literal["barge_in", "cancelled"]) -> None:
        reply = self.reply
        assert reply is not None
        self.reply_subscription.disposable = Disposable()  # cancels chat and speak at once
        rate = self.parts.output_rate
        sent = self.stats.audio_out_samples
        cutoff = sent
        heard = self.heard(reply)
        if heard is not None:
            cutoff = max(reply.start, min(sent, heard))
        text = spoken_text(reply.sentences, cutoff, rate)
        # what was sent beyond the cut-off is not counted as reply audio any more
        self.stats.audio_out_samples = cutoff
        self.emit(
            ReplyInterrupted(
                reply.turn_id, ms(cutoff, rate), ms(sent, rate), text, reason, cutoff, sent
            )
        )
        self.end_reply(reply, "interrupted", spoken=text)

    def now(self) -> float | None:
        clock = self.parts.clock
        return clock() if clock is not None else None

    def heard(self, reply: Reply) -> int | None:
        """The sample the client has played up to: its last `played` report, advanced in
        real time since it came (when there is a clock); None without a report."""
        if reply.played is None:
            return None
        played_ms = float(reply.played)
        now = self.now()
        if now is not None and reply.played_at is not None:
            played_ms += max(0.0, now - reply.played_at) * 1000
        return int(played_ms * self.parts.output_rate // 1000)

    def interrupt_playback(self, reply: Reply) -> None:
        """Barge-in after the reply was wholly sent, while the client (by its `played`
        reports) still plays it: the same `ReplyInterrupted`, and the history's last
        assistant message cut to what was heard."""
        self.finished = None
        rate = self.parts.output_rate
        end = self.stats.audio_out_samples
        heard = self.heard(reply)
        if heard is None or heard >= end:
            return
        cutoff = max(reply.start, heard)
        text = spoken_text(reply.sentences, cutoff, rate)
        self.stats.audio_out_samples = cutoff
        if self.history and self.history[-1]["role"] == "assistant":
            if text:
                self.history[-1] = {"role": "assistant", "content": text}
            else:
                del self.history[-1]
        self.emit(
            ReplyInterrupted(
                reply.turn_id, ms(cutoff, rate), ms(end, rate), text, "barge_in", cutoff, end
            )
        )

    def end_reply(
        self,
        reply: Reply,
        reason: Literal["complete", "interrupted", "error"],
        error: BaseException | None = None,
        spoken: str | None = None,
    ) -> None:
        if self.reply is not reply:
            return
        self.reply = None
        self.finished = reply if reason == "complete" else None
        text = spoken if spoken is not None else " ".join(reply.text)
        calls = reply.calls if reason == "complete" else ()
        if reason != "error" and (text or calls):
            self.remember("assistant", text, calls)
        if calls:
            self.open_calls = {call.id: call for call in calls}
            self.calls_user_text = reply.user_text
        self.emit(TurnEnded(reply.turn_id, reason, reply.user_text, text, error))
        self.maybe_start_reply()
        self.maybe_complete()
