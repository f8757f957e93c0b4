"""A reply, spoken: its chat request in, its conversation events out, and where a
barge-in cuts it.

    request ─► chat (ChatRouter.stream) ─► text_tracker ─┬─► ReplyText deltas
                                                        ├─► whole tool calls ─► ReplyToolCalls
                                                        └─► text pieces ─► speak (speak_text)
                                                             ─► ReplySentence, ReplyAudio,
                                                                ReplyAudioDropped, ReplySegment

`reply_events` keeps the reply's bookkeeping (`Reply`: its sentences, their audio,
the text wholly spoken) and the conversation's reply-audio counter as the events
pass; `interruption` turns a cut-off into the `ReplyInterrupted` the client needs to
drop what it will not play.
"""

from __future__ import annotations

from typing import Literal, cast

from reactivex import Observable
from reactivex import operators as ops

from audio.sentences import Sentence, TextPiece
from operators.failover import Reset
from operators.ordered import merge_now
from pipelines.conversation_types import (
    ConversationEvent,
    ConversationParts,
    ConversationStats,
    ReplyAudio,
    ReplyAudioDropped,
    ReplyInterrupted,
    ReplySegment,
    ReplySentence,
)
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
from pipelines.speech_out import SentenceEnd, Spoken
from protocol.chat import ChatRequest


def reply_events(
    parts: ConversationParts,
    voice: str | None,
    reply: Reply,
    stats: ConversationStats,
    request: ChatRequest,
) -> Observable[ConversationEvent]:
    """A reply's chat request in; its text, tool calls and spoken sentences out, in
    the order they happen (module doc). Completes when the answer is wholly spoken;
    a chat or speak failure errors it; disposing it cancels both calls at once.

    chat:   -"It is noon."-" Bye."(final)|
    events: -x-q-A-A-G------x-q-A-G-|     (x: ReplyText, q: ReplySentence,
                                           A: ReplyAudio, G: ReplySegment)
    """
    tracked: Observable[Tracked] = parts.chat(request).pipe(ops.map(text_tracker(reply.turn_id)))

    def body(shared: Observable[Tracked]) -> Observable[ConversationEvent]:
        texts = cast(Observable[ConversationEvent], shared.pipe(ops.map(said), ops.filter(is_some)))
        calls = cast(
            Observable[ConversationEvent], shared.pipe(ops.map(tool_calls), ops.filter(is_some))
        )
        pieces = cast(Observable[TextPiece], shared.pipe(ops.map(piece), ops.filter(is_some)))

        def to_event(item: Spoken) -> ConversationEvent:
            return spoken_event(parts, reply, stats, item)

        spoken = pieces.pipe(parts.speak(voice), ops.map(to_event))
        return merge_now(texts, calls, spoken)

    return tracked.pipe(ops.publish(body))


def spoken_event(
    parts: ConversationParts, reply: Reply, stats: ConversationStats, item: Spoken
) -> ConversationEvent:
    """One item of the speak stage in (a sentence, its audio, a failover reset, its
    end); the conversation event for it out, with the reply's bookkeeping updated."""
    rate = parts.output_rate
    if isinstance(item, Sentence):
        start = stats.audio_out_samples
        reply.sentences.append(SpokenSentence(item, start))
        return ReplySentence(reply.turn_id, item, ms(start, rate))
    current = reply.sentences[-1]
    if isinstance(item, SegmentAudio):
        current.samples += item.samples.size
        current.model_id = item.model_id
        stats.audio_out_samples += item.samples.size
        return ReplyAudio(reply.turn_id, item.samples, item.model_id)
    if isinstance(item, Reset):
        dropped = current.samples
        current.samples = 0
        stats.audio_out_samples -= dropped
        return ReplyAudioDropped(reply.turn_id, item.model_id, dropped, item.error)
    assert isinstance(item, SentenceEnd)
    current.done = True
    reply.text.append(item.sentence.text)
    model_id = current.model_id
    provider = parts.provider_id(model_id) if model_id else None
    return ReplySegment(
        reply.turn_id,
        item.sentence,
        model_id,
        provider,
        ms(current.start, rate),
        ms(current.samples, rate),
        current.samples,
    )


def heard_sample(reply: Reply, rate: int, now: float | None) -> int | None:
    """The sample of the reply audio the client has played up to: its last `played`
    report, advanced in real time since it came (when `now` is known); None without
    a report."""
    if reply.played is None:
        return None
    played_ms = float(reply.played)
    if now is not None and reply.played_at is not None:
        played_ms += max(0.0, now - reply.played_at) * 1000
    return int(played_ms * rate // 1000)


def interruption(
    reply: Reply,
    sent: int,
    heard: int | None,
    rate: int,
    reason: Literal["barge_in", "cancelled"],
) -> ReplyInterrupted:
    """A reply cut while `sent` samples of reply audio were sent and the client had
    played up to `heard` (None: no report, so all it received) in; what it keeps
    (from the reply's start at least) and the words heard by then out."""
    cutoff = sent if heard is None else max(reply.start, min(sent, heard))
    text = spoken_text(reply.sentences, cutoff, rate)
    return ReplyInterrupted(
        reply.turn_id, ms(cutoff, rate), ms(sent, rate), text, reason, cutoff, sent
    )
