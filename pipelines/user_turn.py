"""The user's side of a conversation's turn: what was said so far and whether more
may come.

    SpeechStarted ─► speaking, its segment open
    SpeechEnded ─► quiet
    Transcribed (final) ─► its text joins the turn, its segment closed
    UserText ─► joins the turn
    UserAudio (turn detection off) ─► buffered ─► commit ─► one segment to transcribe

The turn is ready (`ready()`) when it has words, the user is quiet and every segment
has its final (docs/conversations.md, "Turns"); `take()` makes it one message.
"""

from __future__ import annotations

from operators.audio_intake import PIPELINE_RATE
from operators.vad import SpeechEnded, SpeechStarted
from pipelines.listen_router import SegmentTranscript
from pipelines.speech_in import Heard
from providers.stt_types import SegmentAudio as HeardAudio


class UserTurnState:
    """Finals of the user's turn so far, the segments without their final, whether the
    user speaks, the turns taken, and the audio waiting for a commit."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.open_segments: set[int] = set()
        self.speaking = False
        self.turns = 0
        self.buffer = bytearray()
        self.committed = 0  # segments committed by hand so far

    def heard(self, item: Heard) -> bool:
        """A hear event in (after the VAD or a transcript); True when it was a final."""
        if isinstance(item, SpeechStarted):
            self.speaking = True
            self.open_segments.add(item.segment_id)
        elif isinstance(item, SpeechEnded):
            self.speaking = False
        else:
            transcript = item.item
            if isinstance(transcript, SegmentTranscript) and transcript.is_final:
                self.open_segments.discard(item.segment_id)
                self.add(transcript.text)
                return True
        return False

    def add(self, text: str) -> None:
        """Words of the user's turn in (blank words add nothing)."""
        if text.strip():
            self.pending.append(text.strip())

    def deaf(self) -> None:
        """Hearing ended: no segment is open and nobody speaks any more."""
        self.open_segments.clear()
        self.speaking = False

    def ready(self) -> bool:
        """Whether the turn has words, the user is quiet and every segment has its final."""
        return bool(self.pending) and not self.speaking and not self.open_segments

    def take(self) -> str | None:
        """The pending words as one turn's text (counted), or None when there are none."""
        if not self.pending:
            return None
        text = " ".join(self.pending)
        self.pending.clear()
        self.turns += 1
        return text

    def commit(self) -> tuple[int, HeardAudio] | None:
        """The buffered audio as one finished segment (its id and audio); None when
        nothing is buffered."""
        if not self.buffer:
            return None
        segment_id = self.committed
        self.committed += 1
        audio = HeardAudio(segment_id, 0, 0, PIPELINE_RATE)
        audio.append(bytes(self.buffer))
        end_ms = len(self.buffer) * 1000 // (2 * PIPELINE_RATE)
        audio.finish(end_ms, end_ms)
        self.buffer.clear()
        return segment_id, audio
