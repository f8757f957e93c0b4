"""Test helper: speech with known text, made with espeak-ng (espeakng-loader + ctypes).

`synthesize(texts)` -> {text: int16 samples at 22050 Hz}. The synthesis runs in a
child process: libespeak-ng keeps global state (one synth callback per process),
and the production TTS adapter may use the same library in this test process.
`speech_16k` resamples with `audio.resample`, `silence` makes gaps with numpy,
`build_lm` and `build_dict` write a tiny in-domain language model and dictionary
for pocketsphinx.

Run as `python -m tests.speech_audio` it is the child: JSON request on stdin,
an `.npz` of the samples on stdout.
"""

from __future__ import annotations

import ctypes
import io
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from audio.resample import resample

ESPEAK_RATE = 22050
ROOT = Path(__file__).resolve().parent.parent
Samples = npt.NDArray[np.int16]


def synthesize(texts: Sequence[str], *, wpm: int = 150, voice: str = "en-us") -> dict[str, Samples]:
    """Each text spoken by espeak-ng: int16 mono at 22050 Hz (in a child process)."""
    request = json.dumps({"texts": list(texts), "wpm": wpm, "voice": voice})
    done = subprocess.run(
        [sys.executable, "-m", "tests.speech_audio"],
        input=request.encode(),
        capture_output=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    with np.load(io.BytesIO(done.stdout)) as archive:
        return {text: archive[f"t{i}"].astype(np.int16) for i, text in enumerate(texts)}


def speech_16k(samples: Samples) -> Samples:
    """espeak's 22050 Hz samples resampled to 16 kHz with soxr."""
    return resample(samples, ESPEAK_RATE, 16000)


def silence(ms: int, rate: int = 16000) -> Samples:
    """`ms` milliseconds of digital silence."""
    return np.zeros(rate * ms // 1000, dtype=np.int16)


def build_lm(sentences: Sequence[str], directory: Path) -> str:
    """A tiny ARPA language model of `sentences` (lower-cased); returns its path."""
    from pocketsphinx.lm import ArpaBoLM

    model = ArpaBoLM(text="\n".join(sentences), add_start=True, case="lower")
    model.compute()
    path = directory / "in_domain.arpa"
    with path.open("w") as out:
        model.write(out)
    return str(path)


def build_dict(sentences: Sequence[str], directory: Path) -> str:
    """A pronunciation dictionary with only the words of `sentences` (from the
    wheel's cmudict), so a decoder loads in milliseconds; returns its path."""
    from pocketsphinx import get_model_path

    words = {w for s in sentences for w in s.lower().split()}
    full = Path(get_model_path()) / "en-us" / "cmudict-en-us.dict"
    lines = [
        line
        for line in full.read_text().splitlines()
        if line and re.sub(r"\(\d+\)$", "", line.split(" ", 1)[0]) in words
    ]
    path = directory / "in_domain.dict"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _child() -> None:
    import espeakng_loader

    request = json.loads(sys.stdin.buffer.read())
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    rate = lib.espeak_Initialize(2, 500, espeakng_loader.get_data_path().encode(), 0)
    assert rate == ESPEAK_RATE, rate
    callback_type = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
    )
    chunks: list[Samples] = []

    def on_audio(wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        if count > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16))
        return 0

    callback = callback_type(on_audio)
    lib.espeak_SetSynthCallback(callback)
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName(request["voice"].encode())
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter(1, int(request["wpm"]), 0)  # espeakRATE
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    out: dict[str, Samples] = {}
    for i, text in enumerate(request["texts"]):
        chunks.clear()
        data = text.encode()
        lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 1, None, None)  # espeakCHARS_UTF8
        lib.espeak_Synchronize()
        out[f"t{i}"] = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    buffer = io.BytesIO()
    np.savez(buffer, **out)  # type: ignore[arg-type]
    sys.stdout.buffer.write(buffer.getvalue())


if __name__ == "__main__":
    _child()
