"""The user's items of a Realtime session: one per VAD segment or committed segment,
and their transcripts.

    SpeechStarted ─► speech_started (the coming item's id)
    SpeechEnded   ─► speech_stopped, committed, conversation.item.created
    commit / input_audio item ─► submit(pcm) ─► CommitAudio ─► committed, item.created
    final Transcribed ─► …input_audio_transcription.completed
    transcription_failed notice ─► …input_audio_transcription.failed

Committed segments are numbered in order (the conversation hears them in order);
`awaiting` holds those whose transcript has not come yet, which a `response.create`
waits for.
"""

from __future__ import annotations

from collections import deque

from operators.vad import SpeechEnded, SpeechStarted
from pipelines.conversation_types import CommitAudio, Configure, UserAudio
from pipelines.listen_router import SegmentTranscript
from pipelines.speech_in import Transcribed
from realtime.channel import Channel
from realtime.problems import Problem


class UserItems:
    """Which user item each segment is, and whether committed audio is still unheard."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.vad_items: dict[int, str] = {}  # VAD segment id -> user item id
        self.manual_items: dict[int, str] = {}  # committed segment number -> user item id
        self.manual_count = 0
        self.awaiting: deque[int] = deque()  # committed segments without a final yet

    def submit(self, pcm: bytes) -> str:
        """Hand `pcm` to the conversation as one committed segment; its user item's id out."""
        channel = self.channel
        item_id = channel.ids.make("item")
        number = self.manual_count
        self.manual_count += 1
        self.manual_items[number] = item_id
        self.awaiting.append(number)
        vad = channel.settings.turn_detection is not None
        if vad:  # the conversation buffers for a commit only while its VAD is off
            channel.send(Configure(turn_detection=False))
        channel.send(UserAudio(pcm))
        channel.send(CommitAudio())
        if vad:
            channel.send(Configure(turn_detection=True))
        channel.emit(channel.events.committed(item_id, channel.last_item))
        channel.created(channel.events.user_item(item_id))
        return item_id

    def speech_started(self, event: SpeechStarted) -> None:
        """The VAD heard speech: `input_audio_buffer.speech_started` with the item's id."""
        item_id = self.channel.ids.make("item")
        self.vad_items[event.segment_id] = item_id
        self.channel.emit(self.channel.events.speech_started(event.audio_start_ms, item_id))

    def speech_ended(self, event: SpeechEnded) -> None:
        """The VAD's segment ended: `speech_stopped`, `committed`, the user item created."""
        channel = self.channel
        item_id = self.vad_items.get(event.segment_id) or channel.ids.make("item")
        self.vad_items[event.segment_id] = item_id
        channel.emit(channel.events.speech_stopped(event.audio_end_ms, item_id))
        channel.emit(channel.events.committed(item_id, channel.last_item))
        channel.created(channel.events.user_item(item_id))

    def transcribed(self, event: Transcribed) -> bool:
        """A transcript in; `…transcription.completed` out for a final. True when it was
        a committed segment's (one fewer for a `response.create` to wait for)."""
        transcript = event.item
        if not isinstance(transcript, SegmentTranscript) or not transcript.is_final:
            return False
        if self._manual(event.segment_id):
            self.awaiting.remove(event.segment_id)
            self._heard(self.manual_items.pop(event.segment_id), transcript)
            return True
        vad_item = self.vad_items.pop(event.segment_id, None)
        if vad_item is not None:
            self._heard(vad_item, transcript)
        return False

    def transcription_failed(self, message: str) -> bool:
        """The oldest committed segment could not be heard: `…transcription.failed` out.
        False (nothing done) when no committed segment waits."""
        if not self.awaiting:
            return False
        item_id = self.manual_items.pop(self.awaiting.popleft())
        problem = Problem("transcription_failed", message, type="server_error")
        self.channel.emit(self.channel.events.transcription_failed(item_id, problem))
        return True

    def _manual(self, segment_id: int) -> bool:
        """Whether transcripts of `segment_id` are of a committed segment (not the VAD's)."""
        if segment_id not in self.awaiting:
            return False
        return self.channel.settings.turn_detection is None or segment_id not in self.vad_items

    def _heard(self, item_id: str, transcript: SegmentTranscript) -> None:
        seconds = max(0, transcript.end_ms - transcript.start_ms) / 1000
        events = self.channel.events
        self.channel.emit(events.transcription_completed(item_id, transcript.text.strip(), seconds))
