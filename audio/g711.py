"""G.711 μ-law and A-law: 8-bit telephone codes <-> 16-bit linear PCM, with numpy.

`ulaw_encode(samples)` / `alaw_encode(samples)`: int16 samples in, one code byte
per sample out. `ulaw_decode(data)` / `alaw_decode(data)`: code bytes in, int16
samples out. The codes are exactly those of the ITU-T reference (Sun's g711.c,
which the stdlib's former `audioop.lin2ulaw` / `lin2alaw` also used): encoding
quantises the top 14 (μ-law) or 13 (A-law) bits, decoding gives the centre of
each code's step. G.711 itself does not fix a rate; the Realtime API's `pcmu` and
`pcma` formats are 8 kHz mono.

Each direction is one table lookup per sample: 256 entries to decode, 65,536 to
encode, built once on first use and read-only.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
Uint8Array = npt.NDArray[np.uint8]

_QUANT_MASK = 0x0F
_SEG_SHIFT = 4
_SIGN_BIT = 0x80
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _every_int16() -> npt.NDArray[np.int64]:
    return np.arange(-32768, 32768, dtype=np.int64)


def _frozen(table: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    table.flags.writeable = False
    return table


@cache
def _ulaw_encode_table() -> Uint8Array:
    """Code of every int16 value, indexed by `value + 32768`."""
    pcm = _every_int16() >> 2  # 14-bit
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEG_END, magnitude, side="left")
    quantised = (segment << 4) | ((magnitude >> (segment + 1)) & _QUANT_MASK)
    code = np.where(segment >= 8, 0x7F, quantised) ^ mask
    table: Uint8Array = code.astype(np.uint8)
    _frozen(table)
    return table


@cache
def _ulaw_decode_table() -> Int16Array:
    """Linear value of every μ-law code."""
    code = ~np.arange(256, dtype=np.int64) & 0xFF
    t = ((code & _QUANT_MASK) << 3) + _ULAW_BIAS
    t <<= (code & 0x70) >> _SEG_SHIFT
    linear = np.where(code & _SIGN_BIT, _ULAW_BIAS - t, t - _ULAW_BIAS)
    table: Int16Array = linear.astype(np.int16)
    _frozen(table)
    return table


@cache
def _alaw_encode_table() -> Uint8Array:
    """A-law code of every int16 value, indexed by `value + 32768`."""
    pcm = _every_int16() >> 3  # 13-bit
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    segment = np.searchsorted(_ALAW_SEG_END, magnitude, side="left")
    shift = np.where(segment < 2, 1, segment)
    quantised = (segment << _SEG_SHIFT) | ((magnitude >> shift) & _QUANT_MASK)
    code = np.where(segment >= 8, 0x7F, quantised) ^ mask
    table: Uint8Array = code.astype(np.uint8)
    _frozen(table)
    return table


@cache
def _alaw_decode_table() -> Int16Array:
    """Linear value of every A-law code."""
    code = np.arange(256, dtype=np.int64) ^ 0x55
    t = (code & _QUANT_MASK) << 4
    segment = (code & 0x70) >> _SEG_SHIFT
    t = np.where(segment == 0, t + 8, t + 0x108)
    t = np.where(segment > 1, t << np.maximum(segment - 1, 0), t)
    linear = np.where(code & _SIGN_BIT, t, -t)
    table: Int16Array = linear.astype(np.int16)
    _frozen(table)
    return table


def ulaw_encode(samples: Int16Array) -> bytes:
    """int16 samples in; one μ-law byte per sample out."""
    return _ulaw_encode_table()[samples.astype(np.int32) + 32768].tobytes()


def ulaw_decode(data: bytes) -> Int16Array:
    """μ-law bytes in; one int16 sample per byte out."""
    decoded: Int16Array = _ulaw_decode_table()[np.frombuffer(data, dtype=np.uint8)]
    return decoded


def alaw_encode(samples: Int16Array) -> bytes:
    """int16 samples in; one A-law byte per sample out."""
    return _alaw_encode_table()[samples.astype(np.int32) + 32768].tobytes()


def alaw_decode(data: bytes) -> Int16Array:
    """A-law bytes in; one int16 sample per byte out."""
    decoded: Int16Array = _alaw_decode_table()[np.frombuffer(data, dtype=np.uint8)]
    return decoded
