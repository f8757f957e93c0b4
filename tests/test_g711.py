"""audio/g711.py against the ITU-T reference as the stdlib's `audioop` computed it.

The reference values were computed once with Python 3.11's `audioop` (removed in
3.13): `lin2ulaw` / `lin2alaw` over every int16 value, `ulaw2lin` / `alaw2lin`
over every code byte, written here as SHA-256 digests of the little-endian
bytes, plus spot values a reader can check by hand.
"""

from __future__ import annotations

import hashlib

import numpy as np

from audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

EVERY_INT16 = np.arange(-32768, 32768, dtype=np.int16)
EVERY_CODE = bytes(range(256))

POINTS = [-32768, -32767, -20000, -32636, -1000, -100, -9, -8, -1, 0, 1, 7, 8, 100]
POINTS += [1000, 5000, 20000, 32767]
ULAW_AT_POINTS = [0, 0, 12, 0, 78, 114, 125, 126, 126, 255, 255, 254, 254, 242, 206, 171, 140, 128]
ALAW_AT_POINTS = [42, 42, 38, 42, 122, 83, 85, 85, 85, 213, 213, 213, 213, 211, 250, 134, 166, 170]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_ulaw_encoding_of_every_int16_matches_the_reference() -> None:
    encoded = ulaw_encode(EVERY_INT16)
    assert len(encoded) == 65536
    assert sha(encoded) == "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a"
    assert list(ulaw_encode(np.array(POINTS, dtype=np.int16))) == ULAW_AT_POINTS


def test_alaw_encoding_of_every_int16_matches_the_reference() -> None:
    encoded = alaw_encode(EVERY_INT16)
    assert sha(encoded) == "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b"
    assert list(alaw_encode(np.array(POINTS, dtype=np.int16))) == ALAW_AT_POINTS


def test_decoding_every_code_matches_the_reference() -> None:
    ulaw = ulaw_decode(EVERY_CODE)
    alaw = alaw_decode(EVERY_CODE)
    assert ulaw.dtype == np.int16 and alaw.dtype == np.int16
    assert sha(ulaw.astype("<i2").tobytes()) == (
        "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827"
    )
    assert sha(alaw.astype("<i2").tobytes()) == (
        "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174"
    )
    # the loudest and quietest steps, as the G.711 tables print them
    assert (ulaw[0], ulaw[0x7F], ulaw[0x80], ulaw[0xFF]) == (-32124, 0, 32124, 0)
    assert (alaw[0x2A], alaw[0x55], alaw[0xAA], alaw[0xD5]) == (-32256, -8, 32256, 8)


def test_a_decoded_code_encodes_back_to_itself() -> None:
    codes = np.arange(256, dtype=np.uint8)
    assert alaw_encode(alaw_decode(EVERY_CODE)) == EVERY_CODE
    # μ-law has two codes for zero (0x7F, 0xFF); encoding zero gives 0xFF
    back = np.frombuffer(ulaw_encode(ulaw_decode(EVERY_CODE)), dtype=np.uint8)
    assert list(back[codes != 0x7F]) == list(codes[codes != 0x7F])
    assert back[0x7F] == 0xFF


def test_empty_input_gives_empty_output() -> None:
    empty = np.zeros(0, dtype=np.int16)
    assert ulaw_encode(empty) == b"" and alaw_encode(empty) == b""
    assert ulaw_decode(b"").size == 0 and alaw_decode(b"").size == 0
