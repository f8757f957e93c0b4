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
docs/conversations.md. This module routes the inputs and decides when a reply
starts and stops; the jobs it composes live beside it: the user's side of the turn
in `pipelines.user_turn`, the history and its tool calls in
`pipelines.conversation_history`, the spoken reply and where a barge-in cuts it in
`pipelines.reply_speaking`, the reply's bookkeeping in `pipelines.reply_tracking`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.subject import Subject

from operators.failover import Reset
from operators.vad import SpeechStarted
from pipelines.conversation_history import History
from pipelines.conversation_types import (
    CancelResponse,
    ClearAudio,
    CommitAudio,
    ConversationEvent,
    ConversationInput,
    ConversationParts,
    ConversationSettings,
    ConversationStats,
    CreateResponse,
    Notice,
    Played,
    ReplyStarted,
    ReplyToolCalls,
    ToolResult,
    TurnEnded,
    UserAudio,
    UserText,
    UserTurn,
)
from pipelines.listen_router import SegmentTranscript
from pipelines.reply_speaking import heard_sample, interruption, reply_events
from pipelines.reply_tracking import Reply
from pipelines.speech_in import Heard, Transcribed
from pipelines.user_turn import UserTurnState

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
        self.settings = replace(settings)  # `Configure` changes this conversation's copy
        self.stats = stats
        self.observer = observer
        self.scheduler = scheduler
        self.history = History()
        self.user = UserTurnState()
        self.reply: Reply | None = None
        self.finished: Reply | None = None  # the last reply, wholly sent, maybe still playing
        self.reply_subscription = SerialDisposable()
        self.transcriptions = CompositeDisposable()
        self.manual_jobs = 0
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
        self.user.deaf()
        self.maybe_start_reply()
        self.maybe_complete()

    # ---- inputs ---------------------------------------------------------------

    def on_input(self, item: ConversationInput) -> None:
        if isinstance(item, UserAudio):
            self.stats.audio_in_samples += len(item.pcm) // 2
            if self.settings.turn_detection:
                self.audio_in.on_next(item.pcm)
            else:
                self.user.buffer.extend(item.pcm)
        elif isinstance(item, Played):
            latest = self.reply or self.finished
            if latest is not None:
                latest.played = item.ms
                latest.played_at = self.now()
        elif isinstance(item, UserText):
            self.user.pending.append(item.text)
            if item.respond:
                self.maybe_start_reply()
            else:
                self.take_user_turn()
        elif isinstance(item, CommitAudio):
            self.commit()
        elif isinstance(item, ClearAudio):
            self.user.buffer.clear()
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
            self.settings.update(item)

    def tool_result(self, item: ToolResult) -> None:
        """A call's result joins the history; the last one (with `respond`) starts the reply."""
        if not self.history.tool_result(item.call_id, item.output):
            self.emit(
                Notice(
                    "unknown_tool_call",
                    f"no tool call {item.call_id!r} is waiting for a result (only the calls of "
                    "the last reply are, until the user's next turn or a respond)",
                )
            )
            return
        if item.respond and not self.history.open_calls and self.reply is None:
            if not self.stopped:
                self.start_reply(self.history.calls_user_text)

    def create_response(self, item: CreateResponse) -> None:
        if self.reply is not None:
            self.emit(Notice("reply_in_progress", "a reply is already running; cancel it first"))
            return
        self.take_user_turn()
        history = self.history
        answered = history.calls_user_text if history.last_role() == "tool" else None
        history.close_calls()
        if history.last_role() not in ("user", "tool"):
            self.emit(Notice("nothing_to_answer", "the conversation has no user message to answer"))
            return
        self.respond_instructions = item.instructions
        self.start_reply(answered if answered is not None else history.messages[-1]["content"])

    def commit(self) -> None:
        committed = self.user.commit()
        if committed is None:
            self.emit(Notice("audio_buffer_empty", "there is no buffered audio to commit"))
            return
        segment_id, audio = committed
        self.manual_jobs += 1

        def on_next(item: SegmentTranscript | Reset) -> None:
            self.emit(Transcribed(segment_id, item))
            if isinstance(item, SegmentTranscript) and item.is_final and item.text.strip():
                self.user.add(item.text)
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
        final = self.user.heard(item)
        self.emit(item)
        if isinstance(item, SpeechStarted):
            if self.reply is not None:
                self.interrupt("barge_in")
            elif self.finished is not None:
                self.interrupt_playback(self.finished)
        elif final:
            self.maybe_start_reply()

    # ---- turns ----------------------------------------------------------------

    def take_user_turn(self) -> str | None:
        """The pending finals become one user message (and a `UserTurn`)."""
        text = self.user.take()
        if text is None:
            return None
        self.history.close_calls()
        self.stats.turns += 1
        self.history.remember("user", text, self.settings.max_history)
        self.emit(UserTurn(self.user.turns, text))
        return text

    def maybe_start_reply(self) -> None:
        if self.stopped or self.reply is not None or not self.user.ready():
            return
        text = self.take_user_turn()
        if text is not None:
            self.start_reply(text)

    def start_reply(self, user_text: str) -> None:
        turn_id = self.user.turns
        reply = Reply(turn_id, user_text, self.stats.audio_out_samples)
        self.reply = reply
        self.emit(ReplyStarted(turn_id))
        instructions = self.respond_instructions or self.settings.instructions
        self.respond_instructions = None
        try:
            request = self.history.request(instructions, self.settings)
        except ValueError as error:
            self.end_reply(reply, "error", error)
            return
        events = reply_events(self.parts, self.settings.voice, reply, self.stats, request)

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

    def on_reply_event(self, event: ConversationEvent) -> None:
        if isinstance(event, ReplyToolCalls) and self.reply is not None:
            self.reply.calls = event.calls
        self.emit(event)

    # ---- barge-in -------------------------------------------------------------

    def now(self) -> float | None:
        clock = self.parts.clock
        return clock() if clock is not None else None

    def heard(self, reply: Reply) -> int | None:
        return heard_sample(reply, self.parts.output_rate, self.now())

    def interrupt(self, reason: Literal["barge_in", "cancelled"]) -> None:
        reply = self.reply
        assert reply is not None
        self.reply_subscription.disposable = Disposable()  # cancels chat and speak at once
        sent = self.stats.audio_out_samples
        event = interruption(reply, sent, self.heard(reply), self.parts.output_rate, reason)
        # what was sent beyond the cut-off is not counted as reply audio any more
        self.stats.audio_out_samples = event.kept_samples
        self.emit(event)
        self.end_reply(reply, "interrupted", spoken=event.text)

    def interrupt_playback(self, reply: Reply) -> None:
        """Barge-in after the reply was wholly sent, while the client (by its `played`
        reports) still plays it: the same `ReplyInterrupted`, and the history's last
        assistant message cut to what was heard."""
        self.finished = None
        end = self.stats.audio_out_samples
        heard = self.heard(reply)
        if heard is None or heard >= end:
            return
        event = interruption(reply, end, heard, self.parts.output_rate, "barge_in")
        self.stats.audio_out_samples = event.kept_samples
        self.history.cut_last_reply(event.text)
        self.emit(event)

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
            self.history.remember("assistant", text, self.settings.max_history, calls)
        if calls:
            self.history.await_calls(calls, reply.user_text)
        self.emit(TurnEnded(reply.turn_id, reason, reply.user_text, text, error))
        self.maybe_start_reply()
        self.maybe_complete()
