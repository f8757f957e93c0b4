"""Encode a stream of 16-bit PCM into the client's audio format, incrementally, in memory.

`make_encoder(encoding, sample_rate, channels)` -> a `StreamEncoder`: `write(samples)`
takes mono int16 samples at the output rate and returns the bytes that are ready;
`close()` returns the rest. The concatenation of everything returned is a stream
a player can play from its first byte:

- `pcm_s16le`: raw little-endian samples, no header.
- `wav`: a 44-byte RIFF header with unknown (maximal) sizes, then raw samples.
- `flac`, `ogg_opus`, `mp3`: libsndfile (soundfile) writing to an append-only
  in-memory sink. libsndfile seeks back at close to fix up headers (FLAC's
  STREAMINFO sample count, MP3's LAME tag); bytes already sent cannot change, so
  those rewrites are dropped: FLAC goes out with "total samples unknown" (valid
  FLAC; libsndfile itself then cannot seek in it), MP3 with a silent first frame
  instead of a LAME tag (decoders that trust the first frame for the duration
  estimate it wrong; players that read to the end are fine).
  Opus is emitted in whole Ogg pages (about a second of audio each).

`check_format(encoding, sample_rate, channels)` says why a format cannot be produced
(Opus only at 8/12/16/24/48 kHz; MP3 only at MPEG rates), or None.
Stereo output duplicates the mono voice into both channels.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf

Int16Array = npt.NDArray[np.int16]

ENCODINGS: tuple[str, ...] = ("pcm_s16le", "wav", "flac", "ogg_opus", "mp3")
OPUS_RATES: frozenset[int] = frozenset({8000, 12000, 16000, 24000, 48000})
MP3_RATES: frozenset[int] = frozenset(
    {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}
)
MIN_RATE = 8000
MAX_RATE = 48000

STREAMING_ENCODINGS: frozenset[str] = frozenset({"pcm_s16le", "wav"})
"""Encodings whose bytes map 1:1 onto samples: any prefix of a segment can be sent
and later dropped by the client. The others are emitted per finished segment."""

_SOUNDFILE_FORMATS: Mapping[str, tuple[str, str, dict[str, Any]]] = MappingProxyType(
    {
        "flac": ("FLAC", "PCM_16", {}),
        "ogg_opus": ("OGG", "OPUS", {}),
        # libsndfile's default MP3 level is ~16 kbit/s; 0.5 gives ~35-160 kbit/s by rate.
        "mp3": ("MP3", "MPEG_LAYER_III", {"compression_level": 0.5, "bitrate_mode": "CONSTANT"}),
    }
)


def check_format(encoding: str, sample_rate: int, channels: int = 1) -> str | None:
    """Why (`encoding`, `sample_rate`, `channels`) cannot be produced, or None when it can."""
    if encoding not in ENCODINGS:
        return f"unknown encoding {encoding!r} (use one of {', '.join(ENCODINGS)})"
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        return f"sample_rate must be between {MIN_RATE} and {MAX_RATE} Hz, not {sample_rate}"
    if channels not in (1, 2):
        return f"channels must be 1 or 2, not {channels}"
    if encoding == "ogg_opus" and sample_rate not in OPUS_RATES:
        rates = ", ".join(str(r) for r in sorted(OPUS_RATES))
        return f"ogg_opus supports sample rates {rates} Hz, not {sample_rate}"
    if encoding == "mp3" and sample_rate not in MP3_RATES:
        rates = ", ".join(str(r) for r in sorted(MP3_RATES))
        return f"mp3 supports sample rates {rates} Hz, not {sample_rate}"
    return None


class StreamEncoder(Protocol):
    """PCM in, encoded bytes out, incrementally (one per request)."""

    encoding: str
    sample_rate: int
    channels: int

    def write(self, samples: Int16Array) -> bytes:
        """Mono int16 samples at `sample_rate` in; the bytes ready so far out."""
        ...

    def close(self) -> bytes:
        """End the stream; the remaining bytes out. Idempotent (then returns b"")."""
        ...


def _interleave(samples: Int16Array, channels: int) -> Int16Array:
    if channels == 1:
        return samples
    return np.repeat(samples, channels)


def wav_header(sample_rate: int, channels: int) -> bytes:
    """A 16-bit PCM RIFF/WAVE header for a stream of unknown length (sizes 0xFFFFFFFF)."""
    block = 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


class PcmEncoder:
    """`pcm_s16le` (or, with `header=True`, a streamable `wav`)."""

    def __init__(self, sample_rate: int, channels: int = 1, *, header: bool = False) -> None:
        self.encoding = "wav" if header else "pcm_s16le"
        self.sample_rate = sample_rate
        self.channels = channels
        self._header = wav_header(sample_rate, channels) if header else b""

    def write(self, samples: Int16Array) -> bytes:
        """Samples in; raw little-endian bytes out (the WAV header before the first)."""
        data = _interleave(samples, self.channels).astype("<i2", copy=False).tobytes()
        if self._header:
            data, self._header = self._header + data, b""
        return data

    def close(self) -> bytes:
        """Nothing is buffered: only a WAV header that never went out (no samples)."""
        data, self._header = self._header, b""
        return data


class _AppendOnlySink:
    """A file-like for libsndfile that hands out appended bytes and drops rewrites.

    Only the bytes not yet taken are kept, so memory stays small on long streams.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._taken = 0  # bytes handed out before _pending[0]
        self._pos = 0
        self._end = 0

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        start, end = self._pos, self._pos + len(chunk)
        base = self._taken
        if end > base:
            lo = max(start, base) - base
            if lo > len(self._pending):
                self._pending.extend(b"\0" * (lo - len(self._pending)))
            hi = end - base
            if hi > len(self._pending):
                self._pending.extend(b"\0" * (hi - len(self._pending)))
            self._pending[lo:hi] = chunk[max(start, base) - start :]
        self._pos = end
        self._end = max(self._end, end)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._end + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        return b""  # libsndfile does not read back while writing these formats

    def take(self) -> bytes:
        """The bytes appended since the last call."""
        out = bytes(self._pending)
        self._taken += len(out)
        self._pending.clear()
        return out


class SoundFileEncoder:
    """`flac`, `ogg_opus` or `mp3` through libsndfile, streamed (see the module docstring)."""

    def __init__(self, encoding: str, sample_rate: int, channels: int = 1) -> None:
        problem = check_format(encoding, sample_rate, channels)
        if problem is not None:
            raise ValueError(problem)
        container, subtype, extra = _SOUNDFILE_FORMATS[encoding]
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.channels = channels
        self._sink = _AppendOnlySink()
        self._file: sf.SoundFile | None = sf.SoundFile(
            self._sink,
            mode="w",
            samplerate=sample_rate,
            channels=channels,
            format=container,
            subtype=subtype,
            **extra,
        )

    def write(self, samples: Int16Array) -> bytes:
        """Samples in; whatever the encoder has finished so far out (maybe b"")."""
        if self._file is None:
            raise ValueError("the encoder is closed")
        if samples.size:
            frames = _interleave(samples, self.channels)
            if self.channels > 1:
                frames = frames.reshape(-1, self.channels)
            self._file.write(frames)
        return self._sink.take()

    def close(self) -> bytes:
        """Flush the encoder; the last bytes out."""
        if self._file is None:
            return b""
        file, self._file = self._file, None
        file.close()
        return self._sink.take()


def make_encoder(encoding: str, sample_rate: int, channels: int = 1) -> StreamEncoder:
    """The encoder for a checked format (ValueError when `check_format` objects)."""
    problem = check_format(encoding, sample_rate, channels)
    if problem is not None:
        raise ValueError(problem)
    if encoding == "pcm_s16le":
        return PcmEncoder(sample_rate, channels)
    if encoding == "wav":
        return PcmEncoder(sample_rate, channels, header=True)
    return SoundFileEncoder(encoding, sample_rate, channels)
