"""A reply's bookkeeping: what was spoken of it, and its text from the chat stream.

`spoken_text(sentences, cutoff, rate)`: a reply's sentences (with where their audio
starts and how long it is) and a cut-off sample in; the words heard by then out.
`text_tracker(turn_id)`: chat events in; (a reply-text event, a text piece to speak,
the answer's tool calls) out, skipping after a restart what was already passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from audio.sentences import Sentence, TextPiece
from operators.failover import Reset
from pipelines.chat_router import ChatChunk, ChatEvent
from pipelines.conversation_types import ChatRestarted, ReplyText, ReplyToolCalls
from providers.types import ToolCall


@dataclass
class SpokenSentence:
    """A sentence of a reply: where its audio starts (a sample of the conversation's
    reply audio), how many samples were sent, by which model, whether it is complete."""

    sentence: Sentence
    start: int  # sample of the reply audio where it starts
    samples: int = 0
    model_id: str | None = None
    done: bool = False


@dataclass
class Reply:
    """The running reply of a turn: where its audio starts, the last played position
    reported during it, its sentences and the text of those wholly spoken."""

    turn_id: int
    user_text: str
    start: int  # sample of the conversation's reply audio where this reply starts
    played: int | None = None
    played_at: float | None = None
    sentences: list[SpokenSentence] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    calls: tuple[ToolCall, ...] = ()


SECONDS_PER_CHAR = 0.06
"""Estimated speaking time per character of a sentence whose audio is not complete."""


def spoken_text(sentences: list[SpokenSentence], cutoff: int, rate: int) -> str:
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


def ms(samples: int, rate: int) -> int:
    """Samples at `rate` -> whole milliseconds."""
    return samples * 1000 // rate


Tracked = tuple[ReplyText | ChatRestarted | None, TextPiece | None, ReplyToolCalls | None]


def text_tracker(turn_id: int) -> Callable[[ChatEvent], Tracked]:
    """Chat events -> (a reply-text event, a text piece to speak, the answer's tool
    calls); after a restart the next model's answer is skipped for as many characters
    as were passed on. Whole tool calls (the router assembles them) are gathered and
    leave together with the answer's last chunk; a restart forgets them (the next
    model answers anew)."""
    state = {"emitted": 0, "skip": 0}
    calls: list[ToolCall] = []

    def track(event: ChatEvent) -> Tracked:
        if isinstance(event, Reset):
            state["skip"] = state["emitted"]
            calls.clear()
            return ChatRestarted(turn_id, event.model_id), None, None
        assert isinstance(event, ChatChunk)
        delta = event.delta
        text = delta.content or ""
        if state["skip"]:
            cut = min(state["skip"], len(text))
            text = text[cut:]
            state["skip"] -= cut
        state["emitted"] += len(text)
        for call in delta.tool_calls:
            calls.append(ToolCall(call.id or "", call.name or "", call.arguments or "{}"))
        final = delta.finish_reason is not None
        said = ReplyText(turn_id, text, event.model) if text else None
        piece = TextPiece(text, True) if final else TextPiece(text) if text else None
        made = ReplyToolCalls(turn_id, tuple(calls), event.model) if final and calls else None
        return said, piece, made

    return track


def said(item: Tracked) -> ReplyText | ChatRestarted | None:
    """The reply-text event of a tracked chat event."""
    return item[0]


def piece(item: Tracked) -> TextPiece | None:
    """The text piece to speak of a tracked chat event."""
    return item[1]


def tool_calls(item: Tracked) -> ReplyToolCalls | None:
    """The tool calls of a tracked chat event (only on the answer's last chunk)."""
    return item[2]


def is_some(item: object) -> bool:
    """Whether `item` is not None."""
    return item is not None
