"""Decode a listen request's client audio into mono 16-bit PCM at the pipeline's rate.

Client bytes (any chunk sizes) flow in through `push`; mono PCM16 at `out_rate`
flows out, followed by `flush()` at the end of the stream. What is accepted:

- `pcm_s16le`: raw little-endian 16-bit samples at 8, 11.025, 16, 22.05, 24, 32,
  44.1 or 48 kHz, mono or interleaved stereo (stereo is downmixed to the mean
  of both channels). Decoded as it arrives. A chunk may end anywhere, even in
  the middle of a sample or of a stereo frame: the incomplete bytes are carried
  over to the next chunk. Bytes still incomplete at the end are reported in
  `dangling_bytes` (they are not audio) rather than silently dropped.
- `wav`: a RIFF/WAVE stream of 16-bit PCM (format 1 or WAVE_FORMAT_EXTENSIBLE
  PCM), mono or stereo, any rate from 8 to 48 kHz. The header is parsed as it
  arrives and the data chunk is then decoded incrementally like raw PCM, so a
  streamed WAV (data size 0 or 0xFFFFFFFF, as recorders write before they know
  the length) works too.
- `flac`, `ogg` (Vorbis, Opus or FLAC in Ogg; `ogg_opus` and `ogg_vorbis` are
  accepted names), `mp3`: whole files. libsndfile (soundfile) cannot decode a
  stream that is still growing, so these bytes are accumulated (at most
  `max_container_bytes`) and decoded once, at the end of the stream; the VAD
  then sees all the audio at once. Clients that want live transcripts should
  send `pcm_s16le` (or a streamed WAV). The file is read block by block until
  its end, never by its header's length: a streamed FLAC (Sluice's own speak
  output) says "total samples unknown", and an MP3 header's length is an estimate.

Resampling uses soxr (`audio.resample.Resampler`), which keeps its filter state
across chunks and compensates its delay, so the output has exactly
`round(input_samples * out_rate / in_rate)` samples and timing derived from
output sample counts matches the input's.
"""

from __future__ import annotations

import io
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf

from audio.resample import Int16Array, Resampler, resample

PCM_RATES: tuple[int, ...] = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
"""Sample rates accepted for raw `pcm_s16le`."""

STREAMED_ENCODINGS: tuple[str, ...] = ("pcm_s16le", "wav")
"""Encodings decoded as they arrive."""

WHOLE_FILE_ENCODINGS: dict[str, str] = {
    "flac": "FLAC",
    "ogg": "OGG",
    "ogg_opus": "OGG",
    "ogg_vorbis": "OGG",
    "mp3": "MP3",
}
"""Encodings decoded once at the end of the stream -> their libsndfile major format."""

ENCODINGS: tuple[str, ...] = STREAMED_ENCODINGS + tuple(WHOLE_FILE_ENCODINGS)

MIN_CONTAINER_RATE = 8000
MAX_CONTAINER_RATE = 48000
MAX_WAV_HEADER_BYTES = 1 << 16
DEFAULT_MAX_CONTAINER_BYTES = 32 << 20

UNSUPPORTED_FORMAT = "unsupported_format"
INVALID_AUDIO = "invalid_audio"


class AudioFormatError(ValueError):
    """Audio that cannot be decoded; `name` is the wire error name.

    `unsupported_format`: a format Sluice does not take (encoding, rate, channels,
    bit depth); `invalid_audio`: bytes that do not decode as the declared format.
    """

    def __init__(self, message: str, name: str = UNSUPPORTED_FORMAT) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True, slots=True)
class InputFormat:
    """What the client declared: encoding, and (required for raw PCM) rate and channels."""

    encoding: str = "pcm_s16le"
    sample_rate: int | None = None
    channels: int | None = None


def downmix(samples: Int16Array, channels: int) -> Int16Array:
    """Interleaved int16 of `channels` channels in, their mean as mono int16 out."""
    if channels == 1:
        return samples
    frames = samples.reshape(-1, channels).astype(np.int32)
    mixed: Int16Array = (frames.sum(axis=1) // channels).astype(np.int16)
    return mixed


class AudioDecoder(ABC):
    """Base of the decoders: bytes in (`push`), mono PCM16 bytes at `out_rate` out.

    `output_samples` counts what was returned so far; `in_rate` is the input's
    rate once known (a WAV or whole-file input only knows it from its header).
    """

    def __init__(self, out_rate: int) -> None:
        self.out_rate = out_rate
        self.in_rate: int | None = None
        self.output_samples = 0
        self.dangling_bytes = 0

    @abstractmethod
    def push(self, data: bytes) -> bytes:
        """One chunk of client bytes in; the PCM decoded so far out (may be empty)."""

    @abstractmethod
    def flush(self) -> bytes:
        """End of the stream: the remaining PCM out."""

    def _out(self, samples: Int16Array) -> bytes:
        self.output_samples += int(samples.size)
        return samples.astype("<i2", copy=False).tobytes()


class PcmDecoder(AudioDecoder):
    """Raw little-endian PCM16: carries partial samples, downmixes, resamples.

    push(b"\\x01\\x00\\x02") -> 1 sample (b"\\x01\\x00"); b"\\x02" carried
    push(b"\\x00")           -> 1 sample (b"\\x02\\x00")
    """

    def __init__(self, sample_rate: int, channels: int, out_rate: int) -> None:
        super().__init__(out_rate)
        self.in_rate = sample_rate
        self.channels = channels
        self._frame = 2 * channels
        self._carry = b""
        self._resampler = Resampler(sample_rate, out_rate)

    def push(self, data: bytes) -> bytes:
        """Whole sample frames of `carry + data` out (decoded); the rest carried over."""
        if self._carry:
            data = self._carry + data
        whole = len(data) - len(data) % self._frame
        self._carry = data[whole:]
        if not whole:
            return b""
        samples = np.frombuffer(data[:whole] if whole != len(data) else data, dtype="<i2")
        mono = downmix(samples.astype(np.int16, copy=False), self.channels)
        return self._out(self._resampler.process(mono))

    def flush(self) -> bytes:
        """The resampler's tail; incomplete bytes are counted in `dangling_bytes`."""
        self.dangling_bytes = len(self._carry)
        self._carry = b""
        return self._out(self._resampler.flush())


class WavDecoder(AudioDecoder):
    """A RIFF/WAVE stream: the header parsed as it arrives, then PCM16 decoded live."""

    def __init__(self, declared: InputFormat, out_rate: int) -> None:
        super().__init__(out_rate)
        self._declared = declared
        self._header = bytearray()
        self._pcm: PcmDecoder | None = None
        self._remaining: int | None = None  # data bytes left; None = until the end

    def push(self, data: bytes) -> bytes:
        """Header bytes are buffered until the data chunk starts; data bytes are decoded."""
        if self._pcm is None:
            self._header += data
            start = self._parse_header()
            if start is None:
                if len(self._header) > MAX_WAV_HEADER_BYTES:
                    raise AudioFormatError(
                        f"no WAV data chunk within the first {MAX_WAV_HEADER_BYTES} bytes",
                        INVALID_AUDIO,
                    )
                return b""
            data = bytes(self._header[start:])
            self._header.clear()
        if self._remaining is not None:
            data = data[: self._remaining]
            self._remaining -= len(data)
        assert self._pcm is not None
        out = self._pcm.push(data)
        self.output_samples = self._pcm.output_samples
        return out

    def flush(self) -> bytes:
        """The tail of the PCM; a stream that ended inside its header is invalid."""
        if self._pcm is None:
            if not self._header:
                return b""
            raise AudioFormatError("the WAV stream ended inside its header", INVALID_AUDIO)
        out = self._pcm.flush()
        self.output_samples = self._pcm.output_samples
        self.dangling_bytes = self._pcm.dangling_bytes
        return out

    def _parse_header(self) -> int | None:
        """The offset where PCM data starts once the header is complete, else None."""
        head = bytes(self._header)
        if len(head) < 12:
            return None
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioFormatError("not a RIFF/WAVE stream", INVALID_AUDIO)
        pos = 12
        fmt: tuple[int, int, int] | None = None
        while len(head) >= pos + 8:
            chunk_id = head[pos : pos + 4]
            (size,) = struct.unpack_from("<I", head, pos + 4)
            body = pos + 8
            if chunk_id == b"data":
                if fmt is None:
                    raise AudioFormatError("WAV data chunk before its fmt chunk", INVALID_AUDIO)
                rate, channels, _ = fmt
                self._pcm = PcmDecoder(rate, channels, self.out_rate)
                self.in_rate = rate
                self._remaining = None if size in (0, 0xFFFFFFFF) else size
                return body
            padded = size + (size & 1)
            if len(head) < body + padded:
                return None
            if chunk_id == b"fmt ":
                fmt = self._read_fmt(head[body : body + size])
            pos = body + padded
        return None

    def _read_fmt(self, chunk: bytes) -> tuple[int, int, int]:
        if len(chunk) < 16:
            raise AudioFormatError("WAV fmt chunk is too short", INVALID_AUDIO)
        tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", chunk)
        if tag == 0xFFFE and len(chunk) >= 26:
            (tag,) = struct.unpack_from("<H", chunk, 24)  # the sub-format GUID's first field
        if tag != 1 or bits != 16:
            raise AudioFormatError(
                f"WAV must hold 16-bit integer PCM (got format tag {tag}, {bits} bits)"
            )
        if channels not in (1, 2):
            raise AudioFormatError(f"WAV must be mono or stereo (got {channels} channels)")
        if not MIN_CONTAINER_RATE <= rate <= MAX_CONTAINER_RATE:
            raise AudioFormatError(f"WAV sample rate {rate} Hz is outside 8000-48000 Hz")
        _check_declared(self._declared, rate, channels)
        return rate, channels, bits


READ_BLOCK_FRAMES = 1 << 16


class _SequentialSoundFile(sf.SoundFile):  # type: ignore[misc]  # soundfile is untyped
    """A SoundFile read front to back only.

    soundfile seeks to "position + frames read" after every read of a file
    libsndfile calls seekable; in a FLAC whose header says "total samples unknown"
    that seek fails. Reading sequentially never needs it.
    """

    def seekable(self) -> bool:
        """Always False: the reads go front to back."""
        return False


def read_whole(blob: bytes) -> tuple[str, int, int, Int16Array]:
    """A complete audio file in; (major format, rate, channels, int16 frames x channels) out.

    Reads in blocks until the decoder reports the end, so a file whose header gives
    no (or a wrong) length decodes whole. libsndfile's errors propagate.
    """
    with _SequentialSoundFile(io.BytesIO(blob)) as audio:
        major = str(audio.format)
        rate = int(audio.samplerate)
        channels = int(audio.channels)
        blocks: list[npt.NDArray[np.int16]] = []
        while True:
            block = audio.read(frames=READ_BLOCK_FRAMES, dtype="int16", always_2d=True)
            if not len(block):
                break
            blocks.append(block)
    if not blocks:
        return major, rate, channels, np.zeros((0, channels), dtype=np.int16)
    return major, rate, channels, np.concatenate(blocks)


class WholeFileDecoder(AudioDecoder):
    """FLAC / Ogg / MP3: bytes accumulated, decoded once by libsndfile at `flush()`."""

    def __init__(self, declared: InputFormat, out_rate: int, max_bytes: int) -> None:
        super().__init__(out_rate)
        self._declared = declared
        self._family = WHOLE_FILE_ENCODINGS[declared.encoding]
        self._max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes waiting for the end of the stream."""
        return self._size

    def push(self, data: bytes) -> bytes:
        """Accumulate; nothing comes out before `flush()`."""
        self._size += len(data)
        if self._size > self._max_bytes:
            raise AudioFormatError(
                f"a {self._declared.encoding} stream is decoded whole and may be at most "
                f"{self._max_bytes} bytes; send pcm_s16le to stream longer audio",
                "audio_too_long",
            )
        self._parts.append(data)
        return b""

    def flush(self) -> bytes:
        """Decode everything received (downmixed, resampled); invalid bytes raise."""
        if not self._size:
            return b""
        blob = b"".join(self._parts)
        self._parts = []
        try:
            major, rate, channels, samples = read_whole(blob)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
            raise AudioFormatError(
                f"could not decode the {self._declared.encoding} stream: {error}", INVALID_AUDIO
            ) from error
        if major != self._family:
            raise AudioFormatError(
                f"declared {self._declared.encoding} but the bytes are {major}", INVALID_AUDIO
            )
        if not MIN_CONTAINER_RATE <= rate <= MAX_CONTAINER_RATE:
            raise AudioFormatError(f"sample rate {rate} Hz is outside 8000-48000 Hz")
        _check_declared(self._declared, rate, channels)
        self.in_rate = rate
        mono = downmix(np.ascontiguousarray(samples, dtype=np.int16).reshape(-1), channels)
        return self._out(resample(mono, rate, self.out_rate))


def _check_declared(declared: InputFormat, rate: int, channels: int) -> None:
    if declared.sample_rate is not None and declared.sample_rate != rate:
        raise AudioFormatError(
            f"declared sample_rate {declared.sample_rate} but the audio is {rate} Hz"
        )
    if declared.channels is not None and declared.channels != channels:
        raise AudioFormatError(
            f"declared {declared.channels} channel(s) but the audio has {channels}"
        )


def open_decoder(
    declared: InputFormat,
    out_rate: int,
    *,
    max_container_bytes: int = DEFAULT_MAX_CONTAINER_BYTES,
) -> AudioDecoder:
    """The decoder for a declared format, or `AudioFormatError` naming what is wrong."""
    encoding = declared.encoding
    if encoding == "pcm_s16le":
        if declared.sample_rate is None:
            raise AudioFormatError("pcm_s16le needs format.sample_rate")
        if declared.sample_rate not in PCM_RATES:
            rates = ", ".join(str(r) for r in PCM_RATES)
            raise AudioFormatError(
                f"pcm_s16le sample_rate {declared.sample_rate} is not supported (use {rates})"
            )
        channels = 1 if declared.channels is None else declared.channels
        if channels not in (1, 2):
            raise AudioFormatError(f"channels must be 1 or 2 (got {channels})")
        return PcmDecoder(declared.sample_rate, channels, out_rate)
    if declared.channels is not None and declared.channels not in (1, 2):
        raise AudioFormatError(f"channels must be 1 or 2 (got {declared.channels})")
    if encoding == "wav":
        return WavDecoder(declared, out_rate)
    if encoding in WHOLE_FILE_ENCODINGS:
        return WholeFileDecoder(declared, out_rate, max_container_bytes)
    raise AudioFormatError(
        f"encoding {encoding!r} is not supported (use one of {', '.join(ENCODINGS)})"
    )


def wav_bytes(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """PCM16 bytes in, a complete WAV file (44-byte header + data) out."""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,
        channels,
        sample_rate,
        sample_rate * 2 * channels,
        2 * channels,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm
