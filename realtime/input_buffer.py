"""A Realtime session's input audio: `input_audio_buffer.append` / `commit` /
`clear` and format changes.

    base64 audio in the input format ─► InputBuffer.append ─► 16 kHz PCM16
        turn detection on  ─► the conversation's VAD at once (UserAudio)
        turn detection off ─► the buffer, until commit() hands it out whole

The buffer is bounded (`max_bytes`): past it `append` is refused with
`input_audio_buffer_full`. A commit needs at least 100 ms.
"""

from __future__ import annotations

from pipelines.conversation_types import ClearAudio, UserAudio
from realtime.channel import Channel
from realtime.client_events import AudioAppend
from realtime.formats import PIPELINE_RATE, AudioFormat, FormatError, InputDecoder, decode_base64
from realtime.problems import Problem


class InputBuffer:
    """The uncommitted input audio of one session (16 kHz PCM16 since the last commit)."""

    def __init__(self, channel: Channel, max_bytes: int) -> None:
        self.channel = channel
        self.max_bytes = max_bytes
        self.decoder = InputDecoder(channel.settings.input_format)
        self.buffer = bytearray()

    @property
    def vad(self) -> bool:
        """Whether turn detection is on (audio goes to the VAD, not the buffer)."""
        return self.channel.settings.turn_detection is not None

    def append(self, event: AudioAppend) -> None:
        """An `input_audio_buffer.append` in; the audio to the VAD or the buffer.
        Raises `Problem` for bad base64 or a full buffer."""
        try:
            data = decode_base64(event.audio)
        except FormatError as error:
            raise Problem("invalid_value", str(error), "audio") from error
        pcm = self.decoder.decode(data)
        if self.vad:
            if pcm:
                self.channel.send(UserAudio(pcm))
            return
        if len(self.buffer) + len(pcm) > self.max_bytes:
            seconds = self.max_bytes // (2 * PIPELINE_RATE)
            raise Problem(
                "input_audio_buffer_full",
                f"the input audio buffer holds at most {seconds} s; commit or clear it",
                "audio",
            )
        self.buffer.extend(pcm)

    def reformat(self, new_format: AudioFormat) -> None:
        """The input format changes: what the old decoder holds goes on, a new decoder
        reads what follows. Call before the settings change."""
        pcm = self.decoder.flush()
        if pcm:
            if self.vad:
                self.channel.send(UserAudio(pcm))
            else:
                self.buffer.extend(pcm)
        self.decoder = InputDecoder(new_format)

    def to_vad(self) -> None:
        """Turn detection came on: what was buffered for a commit goes to the VAD, as
        OpenAI's buffer would."""
        if self.buffer:
            self.channel.send(UserAudio(bytes(self.buffer)))
            self.buffer.clear()

    def clear(self) -> None:
        """`input_audio_buffer.clear`: drop the buffer; `ClearAudio` in, `cleared` out."""
        self.buffer.clear()
        self.decoder.flush()
        self.channel.send(ClearAudio())
        self.channel.emit(self.channel.events.cleared())

    def commit(self) -> bytes:
        """`input_audio_buffer.commit`: the buffered PCM out (the buffer emptied).
        Raises `Problem` with turn detection on or under 100 ms of audio."""
        self.buffer.extend(self.decoder.flush())
        if self.vad:
            raise Problem(
                "input_audio_buffer_commit_unsupported",
                "with turn detection on, the server commits the buffer when speech ends; "
                "turn it off (session.update turn_detection: null) to commit by hand",
            )
        if len(self.buffer) < 2 * PIPELINE_RATE // 10:
            raise Problem(
                "input_audio_buffer_commit_empty",
                f"the buffer holds {len(self.buffer) * 1000 // (2 * PIPELINE_RATE)} ms of "
                "audio; at least 100 ms are needed to commit",
            )
        pcm = bytes(self.buffer)
        self.buffer.clear()
        return pcm

    def decode_whole(self, audio: object, param: str) -> bytes:
        """An item's base64 audio in the input format in; its 16 kHz PCM out (a decoder of
        its own: the buffer's stream is not touched). Raises `Problem` on `param`."""
        try:
            data = decode_base64(audio)
        except FormatError as error:
            raise Problem("invalid_value", str(error), param) from error
        decoder = InputDecoder(self.channel.settings.input_format)
        return decoder.decode(data) + decoder.flush()
