"""Cut a byte stream of arbitrary chunk sizes into frames of exactly `frame_bytes`.

Client audio arrives in whatever sizes the client's recorder produced (and a
websocket frame may even end in the middle of a 16-bit sample); webrtcvad takes
frames of exactly 10, 20 or 30 ms. `Reframer` keeps what does not fill a frame
(including an odd trailing byte) and puts it in front of the next chunk, so the
frames it returns, followed by `flush()`, are the input bytes exactly: nothing
dropped, nothing duplicated, nothing reordered.

    chunks: [5 bytes] [7 bytes] [1 byte] [3 bytes]     (frame_bytes = 4)
    frames:  [4]       [4][4]    -        [4]          flush(): b""
"""

from __future__ import annotations


def frame_bytes_for(sample_rate: int, frame_ms: int, channels: int = 1) -> int:
    """Bytes in one frame of 16-bit PCM: `frame_ms` of `sample_rate` Hz audio.

    Raises ValueError when the frame is not a whole number of samples
    (e.g. 10 ms at 22050 Hz).
    """
    samples, rest = divmod(sample_rate * frame_ms, 1000)
    if rest or samples <= 0:
        raise ValueError(f"{frame_ms} ms at {sample_rate} Hz is not a whole number of samples")
    return samples * 2 * channels


class Reframer:
    """Bytes of any sizes in (`push`), frames of exactly `frame_bytes` out.

    `pending` is the number of bytes held back (always < `frame_bytes`);
    `flush()` hands them out once at the end of the stream.
    """

    __slots__ = ("_buffer", "frame_bytes")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError("frame_bytes must be positive")
        self.frame_bytes = frame_bytes
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned in a whole frame."""
        return len(self._buffer)

    def push(self, data: bytes) -> list[bytes]:
        """Append `data`; return every whole frame now available, in order."""
        if not data:
            return []
        size = self.frame_bytes
        buffer = self._buffer
        if not buffer and len(data) % size == 0:
            return [data[i : i + size] for i in range(0, len(data), size)]
        buffer += data
        whole = len(buffer) - len(buffer) % size
        frames = [bytes(buffer[i : i + size]) for i in range(0, whole, size)]
        del buffer[:whole]
        return frames

    def flush(self) -> bytes:
        """The held-back tail (shorter than a frame, possibly empty); the reframer is reset."""
        tail = bytes(self._buffer)
        self._buffer.clear()
        return tail
