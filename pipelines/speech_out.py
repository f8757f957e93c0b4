"""Speech out: a text stream in, spoken sentences out, with the speak router's failover.

    text pieces ─► take until the final piece ─► split_sentences ─► per sentence,
        in order (concat_map, each `paced`): Sentence, SpeakRouter.segment
        (SegmentAudio / Reset), SentenceEnd

`speak_text(router, voice, sample_rate, context_id)` is the whole of it as one
operator: what the speak endpoint runs between its text intake and its encoder,
and what a conversation runs between the chat router's tokens and the user's
speaker. Synthesis of the first sentence starts as soon as it is complete; a
model that fails inside a sentence goes last for the rest of the request
(`StickyHealth`), and only that sentence and the rest are synthesized again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import reactivex
from reactivex import Observable
from reactivex import operators as ops

from audio.sentences import DEFAULT_MAX_CHARS, Sentence, TextPiece, split_sentences
from observability.telemetry import RequestTelemetry
from operators.failover import Reset
from operators.ordered import enclose
from operators.pacing import paced
from pipelines.speak_router import SegmentAudio, SpeakRouter, StickyHealth
from protocol.speak import Voice


@dataclass(frozen=True, slots=True)
class SentenceEnd:
    """Every byte of `sentence`'s audio was delivered (by the last model that tried)."""

    sentence: Sentence


Spoken = Sentence | SegmentAudio | Reset | SentenceEnd
"""What `speak_text` emits: per sentence, its start, its audio (and failovers), its end."""


def _not_final(piece: TextPiece) -> bool:
    return not piece.final


def _from_index(skip: int) -> Callable[[Sentence], bool]:
    def keep(sentence: Sentence) -> bool:
        return sentence.index >= skip

    return keep


def speak_text(
    router: SpeakRouter,
    voice: Voice,
    sample_rate: int,
    context_id: str,
    telemetry: RequestTelemetry | None = None,
    max_sentence_chars: int = DEFAULT_MAX_CHARS,
    wait: Callable[[], float] | None = None,
    skip: int = 0,
) -> Callable[[Observable[TextPiece]], Observable[Spoken]]:
    """Text pieces in; per sentence `Sentence`, its audio at `sample_rate`, `SentenceEnd` out.

    pieces: -"Hi. Th"---"ere."(final)-|
    result: --S0-a-a-E0--S1-a-R(m1)-a-E1-|     (R: model m1 failed inside sentence 1)
    Pieces after the final one are not read. `wait()` (asked before each
    sentence starts) holds synthesis back, e.g. while audio runs far ahead of
    real time. All models failing a sentence errors with `AllModelsUnavailable`.
    The first `skip` sentences are not spoken (a request taken over from a gone
    instance had them spoken there); the others keep their index and chars.
    """
    health = StickyHealth(router.health)

    def sentence_audio(sentence: Sentence) -> Observable[Spoken]:
        audio: Observable[Spoken] = router.segment(
            sentence.text,
            voice,
            sample_rate,
            f"{context_id}:{sentence.index}",
            health,
            telemetry,
        )
        spoken = audio.pipe(enclose(lambda: sentence, lambda: SentenceEnd(sentence)))
        return spoken.pipe(paced(wait)) if wait is not None else spoken

    if skip:
        return reactivex.compose(
            ops.take_while(_not_final, inclusive=True),
            split_sentences(max_sentence_chars),
            ops.filter(_from_index(skip)),
            ops.concat_map(sentence_audio),
        )
    return reactivex.compose(
        ops.take_while(_not_final, inclusive=True),
        split_sentences(max_sentence_chars),
        ops.concat_map(sentence_audio),
    )
