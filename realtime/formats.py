"""The Realtime API's audio formats, and base64 audio in and out of them.

    input_audio_buffer.append {audio: base64} ─► InputDecoder.decode ─► PCM16 16 kHz
    reply PCM16 at SPEAK_RATE ─► OutputEncoder.encode ─► base64 for response.output_audio.delta

Formats: `audio/pcm` (PCM16 little-endian mono at 24 kHz; beta name `pcm16`),
`audio/pcmu` (G.711 μ-law at 8 kHz; beta `g711_ulaw`) and `audio/pcma` (G.711
A-law at 8 kHz; beta `g711_alaw`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from audio.resample import Int16Array, Resampler

Kind = Literal["pcm", "pcmu", "pcma"]

PIPELINE_RATE = 16000
"""The rate the conversation hears at (`operators.audio_intake.PIPELINE_RATE`)."""
SPEAK_RATE = 24000
"""The rate replies are spoken at before the output format's conversion."""

_GA_TYPES: dict[str, Kind] = {"audio/pcm": "pcm", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
_BETA_NAMES: dict[str, Kind] = {"pcm16": "pcm", "g711_ulaw": "pcmu", "g711_alaw": "pcma"}


class FormatError(ValueError):
    """An audio format the Realtime API does not define."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One of the Realtime API's audio formats."""

    kind: Kind

    @property
    def rate(self) -> int:
        """Samples per second: 24000 for PCM, 8000 for G.711."""
        return 24000 if self.kind == "pcm" else 8000

    def ga(self) -> dict[str, Any]:
        """The GA shape: `{"type": "audio/pcm", "rate": 24000}` or `{"type": "audio/pcmu"}`."""
        if self.kind == "pcm":
            return {"type": "audio/pcm", "rate": 24000}
        return {"type": f"audio/{self.kind}"}

    def beta(self) -> str:
        """The beta name: `pcm16`, `g711_ulaw` or `g711_alaw`."""
        return {"pcm": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}[self.kind]


PCM = AudioFormat("pcm")


def parse_format(value: object) -> AudioFormat:
    """A format in either shape (a GA object or a beta name) in; an `AudioFormat` out.

    Raises `FormatError` naming what is accepted; PCM at any rate but 24000 too.
    """
    if isinstance(value, str):
        kind = _BETA_NAMES.get(value) or _GA_TYPES.get(value)
        if kind is None:
            raise FormatError(f"unknown audio format {value!r}; use pcm16, g711_ulaw or g711_alaw")
        return AudioFormat(kind)
    if isinstance(value, dict):
        kind = _GA_TYPES.get(str(value.get("type", "audio/pcm")))
        if kind is None:
            raise FormatError(
                f"unknown audio format type {value.get('type')!r}; "
                "use audio/pcm, audio/pcmu or audio/pcma"
            )
        rate = value.get("rate")
        if kind == "pcm" and rate is not None and rate != 24000:
            raise FormatError(f"audio/pcm is 24000 Hz only (got rate {rate!r})")
        return AudioFormat(kind)
    raise FormatError("an audio format is an object like {'type': 'audio/pcm'} or a name")


def decode_base64(text: object) -> bytes:
    """Base64 text in; its bytes out (`FormatError` when it is not base64)."""
    if not isinstance(text, str):
        raise FormatError("audio must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise FormatError(f"audio is not valid base64: {error}") from error


class InputDecoder:
    """A stream of one format's bytes in; PCM16 mono at 16 kHz out (soxr keeps state)."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._resampler = Resampler(fmt.rate, PIPELINE_RATE)
        self._carry = b""
        self.samples_in = 0

    def decode(self, data: bytes) -> bytes:
        """One chunk of the format's bytes in (any length); 16 kHz PCM16 bytes out."""
        samples = self._samples(data)
        self.samples_in += samples.size
        return self._resampler.process(samples).astype("<i2").tobytes()

    def _samples(self, data: bytes) -> Int16Array:
        if self.format.kind == "pcmu":
            return ulaw_decode(data)
        if self.format.kind == "pcma":
            return alaw_decode(data)
        data = self._carry + data
        whole = len(data) - len(data) % 2
        self._carry = data[whole:]
        return np.frombuffer(data[:whole], dtype="<i2").astype(np.int16)

    def flush(self) -> bytes:
        """The audio still inside the resampler (at a commit), as 16 kHz PCM16 bytes;
        later chunks start a fresh stream."""
        tail = self._resampler.flush()
        self._resampler = Resampler(self.format.rate, PIPELINE_RATE)
        return tail.astype("<i2").tobytes()

    def ms(self) -> int:
        """Milliseconds of audio decoded so far."""
        return self.samples_in * 1000 // self.format.rate


class OutputEncoder:
    """Reply PCM16 at `SPEAK_RATE` in; base64 audio of `fmt` out, chunk by chunk."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._resampler = Resampler(SPEAK_RATE, fmt.rate)

    def encode(self, samples: Int16Array) -> str:
        """int16 samples at 24 kHz in; base64 text of the format's bytes out ('' if none)."""
        out = self._resampler.process(samples)
        return self._encode(out)

    def flush(self) -> str:
        """What the resampler still holds, encoded ('' if nothing)."""
        return self._encode(self._resampler.flush())

    def _encode(self, samples: Int16Array) -> str:
        if samples.size == 0:
            return ""
        if self.format.kind == "pcmu":
            data = ulaw_encode(samples)
        elif self.format.kind == "pcma":
            data = alaw_encode(samples)
        else:
            data = samples.astype("<i2").tobytes()
        return base64.b64encode(data).decode("ascii")
