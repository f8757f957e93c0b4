"""Client audio: reframing without loss, PCM / WAV / whole-file decoding, format errors."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from audio.encode import make_encoder
from audio.pcm import (
    AudioFormatError,
    InputFormat,
    PcmDecoder,
    WholeFileDecoder,
    downmix,
    open_decoder,
    wav_bytes,
)
from audio.reframe import Reframer, frame_bytes_for
from audio.resample import resample


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return pieces


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=30),
    frame=st.sampled_from([160, 320, 480, 640, 960]),
)
def test_reframer_never_drops_duplicates_or_reorders_a_byte(
    data: bytes, cuts: list[int], frame: int
) -> None:
    reframer = Reframer(frame)
    frames: list[bytes] = []
    for piece in _split(data, cuts):
        frames.extend(reframer.push(piece))
        assert reframer.pending < frame
    assert all(len(f) == frame for f in frames)
    assert b"".join(frames) + reframer.flush() == data
    assert len(frames) == len(data) // frame


def test_reframer_carries_an_odd_byte_into_the_next_frame() -> None:
    reframer = Reframer(4)
    assert reframer.push(b"\x01\x02\x03") == []
    assert reframer.push(b"\x04\x05") == [b"\x01\x02\x03\x04"]
    assert reframer.pending == 1
    assert reframer.flush() == b"\x05"
    assert reframer.flush() == b""


def test_frame_sizes_for_webrtcvad() -> None:
    assert frame_bytes_for(16000, 20) == 640
    assert frame_bytes_for(8000, 10) == 160
    assert frame_bytes_for(48000, 30) == 2880
    with pytest.raises(ValueError, match="whole number"):
        frame_bytes_for(22050, 10)


def _tone(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-20000, 20000, size=n, dtype=np.int16)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_pcm_decoder_reassembles_samples_split_anywhere(cuts: list[int]) -> None:
    samples = _tone(2000)
    data = samples.tobytes()
    decoder = PcmDecoder(16000, 1, 16000)
    out = b"".join(decoder.push(piece) for piece in _split(data, cuts)) + decoder.flush()
    assert out == data
    assert decoder.dangling_bytes == 0
    assert decoder.output_samples == 2000


def test_pcm_decoder_downmixes_stereo_even_when_a_frame_is_split() -> None:
    left = np.array([1000, -1000, 32767, -32768], dtype=np.int16)
    right = np.array([3000, -3001, 32767, -32768], dtype=np.int16)
    interleaved = np.column_stack([left, right]).reshape(-1).tobytes()
    decoder = PcmDecoder(16000, 2, 16000)
    out = (
        decoder.push(interleaved[:3])
        + decoder.push(interleaved[3:7])
        + decoder.push(interleaved[7:])
    )
    out += decoder.flush()
    assert np.frombuffer(out, dtype="<i2").tolist() == [2000, -2001, 32767, -32768]
    assert downmix(np.array([1, 3, 5, 7], dtype=np.int16), 2).tolist() == [2, 6]


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 24000, 32000, 44100, 48000])
def test_pcm_decoder_resamples_to_exactly_the_same_duration(rate: int) -> None:
    samples = _tone(rate)  # one second
    decoder = PcmDecoder(rate, 1, 16000)
    data = samples.tobytes()
    out = b"".join(decoder.push(data[i : i + 333]) for i in range(0, len(data), 333))
    out += decoder.flush()
    assert len(out) == 2 * 16000
    assert decoder.output_samples == 16000


def test_a_trailing_odd_byte_is_reported_not_silently_dropped() -> None:
    decoder = PcmDecoder(16000, 1, 16000)
    assert decoder.push(b"\x01\x00\x02") == b"\x01\x00"
    assert decoder.flush() == b""
    assert decoder.dangling_bytes == 1


@pytest.mark.parametrize(
    ("declared", "match"),
    [
        (InputFormat("pcm_s16le", None, 1), "needs format.sample_rate"),
        (InputFormat("pcm_s16le", 12345, 1), "12345 is not supported"),
        (InputFormat("pcm_s16le", 16000, 3), "channels must be 1 or 2"),
        (InputFormat("opus_raw", 16000, 1), "not supported"),
        (InputFormat("wav", None, 6), "channels must be 1 or 2"),
    ],
)
def test_unsupported_formats_are_refused_with_a_reason(declared: InputFormat, match: str) -> None:
    with pytest.raises(AudioFormatError, match=match) as caught:
        open_decoder(declared, 16000)
    assert caught.value.name == "unsupported_format"


def _wav_with_extra_chunk(pcm: bytes, rate: int, channels: int, data_size: int | None) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    info = b"INFOISFT\x05\x00\x00\x00sluic\x00"  # odd-sized sub chunk, padded
    size = len(pcm) if data_size is None else data_size
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"LIST"
        + struct.pack("<I", len(info))
        + info
        + b"data"
        + struct.pack("<I", size)
        + pcm
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("data_size", [None, 0, 0xFFFFFFFF])
@pytest.mark.parametrize("step", [1, 7, 4096])
def test_wav_is_decoded_incrementally_as_its_bytes_arrive(data_size: int | None, step: int) -> None:
    pcm = _tone(1600).tobytes()
    blob = _wav_with_extra_chunk(pcm, 16000, 1, data_size)
    decoder = open_decoder(InputFormat("wav"), 16000)
    outs = [decoder.push(blob[i : i + step]) for i in range(0, len(blob), step)]
    assert b"".join(outs) + decoder.flush() == pcm
    assert decoder.in_rate == 16000
    if step == 7:
        assert sum(1 for o in outs if o) > 100  # audio came out before the stream ended


def test_wav_stereo_44k_is_downmixed_and_resampled_and_trailing_chunks_ignored() -> None:
    stereo = np.column_stack([_tone(44100, 2), _tone(44100, 3)]).reshape(-1)
    blob = wav_bytes(stereo.tobytes(), 44100, channels=2) + b"LIST\x04\x00\x00\x00abcd"
    decoder = open_decoder(InputFormat("wav", 44100, 2), 16000)
    out = decoder.push(blob) + decoder.flush()
    assert len(out) == 2 * 16000


@pytest.mark.parametrize(
    ("blob", "declared", "match"),
    [
        (b"RIFX\x00\x00\x00\x00WAVE", InputFormat("wav"), "not a RIFF/WAVE"),
        (
            wav_bytes(b"\x00" * 64, 16000)[:20]
            + struct.pack("<HHIIHH", 1, 1, 16000, 48000, 3, 24)
            + b"data\x00\x00\x00\x00",
            InputFormat("wav"),
            "16-bit integer PCM",
        ),
        (wav_bytes(b"\x00" * 64, 16000), InputFormat("wav", 24000), "declared sample_rate 24000"),
    ],
)
def test_bad_wav_headers_raise(blob: bytes, declared: InputFormat, match: str) -> None:
    decoder = open_decoder(declared, 16000)
    with pytest.raises(AudioFormatError, match=match):
        decoder.push(blob)


def test_a_wav_stream_that_ends_inside_its_header_is_invalid() -> None:
    decoder = open_decoder(InputFormat("wav"), 16000)
    assert decoder.push(wav_bytes(b"", 16000)[:30]) == b""
    with pytest.raises(AudioFormatError, match="inside its header") as caught:
        decoder.flush()
    assert caught.value.name == "invalid_audio"


def _encode(samples: np.ndarray, rate: int, fmt: str, subtype: str, channels: int = 1) -> bytes:
    out = io.BytesIO()
    shaped = samples.reshape(-1, channels) if channels > 1 else samples
    sf.write(out, shaped, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def test_flac_is_accumulated_and_decoded_whole_at_the_end() -> None:
    stereo = np.column_stack([_tone(16000, 4), _tone(16000, 5)]).reshape(-1)
    blob = _encode(stereo, 16000, "FLAC", "PCM_16", channels=2)
    decoder = open_decoder(InputFormat("flac"), 16000)
    assert isinstance(decoder, WholeFileDecoder)
    assert all(decoder.push(blob[i : i + 100]) == b"" for i in range(0, len(blob), 100))
    out = decoder.flush()
    assert np.array_equal(np.frombuffer(out, dtype="<i2"), downmix(stereo, 2))  # lossless


@pytest.mark.parametrize("encoding", ["flac", "ogg_opus", "mp3"])
def test_what_sluice_streams_out_it_decodes(encoding: str) -> None:
    # A streamed FLAC says "total samples unknown" and an MP3 header's length is an
    # estimate: the decoder reads to the end of the data, not to the header's length.
    t = np.arange(24000 * 2) / 24000
    samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    encoder = make_encoder(encoding, 24000)
    blob = encoder.write(samples[:5000]) + encoder.write(samples[5000:]) + encoder.close()
    decoder = open_decoder(InputFormat(encoding), 24000)
    decoder.push(blob)
    out = np.frombuffer(decoder.flush(), dtype="<i2")
    if encoding == "flac":
        assert np.array_equal(out, samples)  # lossless, every sample
    else:
        assert samples.size <= out.size <= samples.size + 2400  # codec padding
        assert np.abs(out).max() > 1000


@pytest.mark.parametrize(("encoding", "subtype"), [("ogg", "VORBIS"), ("ogg_opus", "OPUS")])
def test_ogg_is_decoded_whole_and_resampled(encoding: str, subtype: str) -> None:
    t = np.arange(48000) / 48000
    samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    blob = _encode(samples, 48000, "OGG", subtype)
    decoder = open_decoder(InputFormat(encoding), 16000)
    decoder.push(blob)
    out = np.frombuffer(decoder.flush(), dtype="<i2")
    assert abs(out.size - 16000) <= 16  # codec padding at most a millisecond
    assert decoder.in_rate == 48000


def test_whole_file_errors_name_the_problem() -> None:
    wav = wav_bytes(_tone(800).tobytes(), 16000)
    decoder = open_decoder(InputFormat("flac"), 16000)
    decoder.push(wav)
    with pytest.raises(AudioFormatError, match="declared flac but the bytes are WAV"):
        decoder.flush()
    garbage = open_decoder(InputFormat("mp3"), 16000)
    garbage.push(b"definitely not audio" * 10)
    with pytest.raises(AudioFormatError, match="could not decode") as caught:
        garbage.flush()
    assert caught.value.name == "invalid_audio"
    small = open_decoder(InputFormat("flac"), 16000, max_container_bytes=1000)
    with pytest.raises(AudioFormatError) as too_big:
        small.push(b"\x00" * 1001)
    assert too_big.value.name == "audio_too_long"


def test_wav_bytes_round_trips_through_soundfile() -> None:
    samples = _tone(500)
    data, rate = sf.read(io.BytesIO(wav_bytes(samples.tobytes(), 24000)), dtype="int16")
    assert rate == 24000
    assert np.array_equal(data, samples)
    assert resample(samples, 16000, 16000) is samples
