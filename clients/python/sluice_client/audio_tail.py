"""A listen request's unacknowledged audio: what a resume sends again.

send_audio(chunk) ─► AudioTail.add ─► kept (bounded, oldest out)
transcript / speech_ended frames ─► heard(end_ms, final) ─► a final one drops the
    audio before its end; any one moves the point the server is known to have
resume ─► unheard() ─► the audio after the last final transcript, sent again behind
    `resume`

Only formats whose bytes map to milliseconds are kept: `pcm_s16le` (and `wav`, whose
44-byte header comes first). The audio is resent from the end of the last final
transcript, not from the furthest point the server reported: when the instance that
ran the request is gone, another one takes it over with a fresh run that needs the
whole of every segment not yet final. The resent audio is preceded by
`{"type": "audio_offset", "offset"}` (the byte of the request's audio it starts at);
a server that still has the request skips what it already has (docs/resume.md
section 7).
"""

from __future__ import annotations

from collections import deque

from sluice_client.messages import AudioFormat

WAV_HEADER_BYTES = 44


class AudioTail:
    """The audio a listen request sent after the last final transcript's `end_ms`."""

    def __init__(self, bytes_per_ms: float, header_bytes: int, max_bytes: int) -> None:
        self._per_ms = bytes_per_ms
        self._header = header_bytes
        self._max_bytes = max_bytes
        self._chunks: deque[tuple[int, bytes]] = deque()
        """(offset in the request's audio stream, bytes), in order."""
        self._kept = 0
        self.sent = 0
        """Bytes sent so far: the offset of the next chunk."""
        self.heard_at = 0
        """The offset up to which the server has reported audio (a transcript's end)."""
        self.acked_at = 0
        """The offset up to which a final transcript covered the audio."""
        self.resent = 0
        """Bytes sent again after resumes."""

    @classmethod
    def for_format(cls, fmt: AudioFormat, max_bytes: int) -> AudioTail | None:
        """The tail of a request in `fmt`, or None for a compressed format (its bytes
        do not map to milliseconds)."""
        per_ms = fmt.sample_rate * fmt.channels * 2 / 1000
        if fmt.encoding == "pcm_s16le":
            return cls(per_ms, 0, max_bytes)
        if fmt.encoding == "wav":
            return cls(per_ms, WAV_HEADER_BYTES, max_bytes)
        return None

    def add(self, chunk: bytes) -> None:
        """A chunk of audio was queued for the server."""
        if not chunk:
            return
        self._chunks.append((self.sent, chunk))
        self.sent += len(chunk)
        self._kept += len(chunk)
        while self._kept > self._max_bytes and len(self._chunks) > 1:
            _, dropped = self._chunks.popleft()
            self._kept -= len(dropped)

    def heard(self, end_ms: float, final: bool) -> None:
        """The server reported audio up to `end_ms`; a final transcript acknowledges
        everything before it (that audio is dropped)."""
        offset = min(self.sent, self._header + int(end_ms * self._per_ms))
        self.heard_at = max(self.heard_at, offset)
        if final:
            self.acked_at = max(self.acked_at, offset)
            while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= offset:
                _, dropped = self._chunks.popleft()
                self._kept -= len(dropped)

    def unheard(self) -> tuple[int, list[bytes]]:
        """The kept audio after the last final transcript's end, to send again, and the
        offset of its first byte in the request's audio."""
        out: list[bytes] = []
        first: int | None = None
        for start, chunk in self._chunks:
            end = start + len(chunk)
            if end <= self.acked_at:
                continue
            cut = max(0, self.acked_at - start)
            if first is None:
                first = start + cut
            out.append(chunk[cut:])
        self.resent += sum(len(c) for c in out)
        return (self.sent if first is None else first), out
