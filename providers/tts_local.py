"""The embedded text-to-speech engine: espeak-ng from the `espeakng-loader` wheel.

Flow: a `SpeechRequest` (one sentence) flows in; espeak-ng synthesizes it on the
provider's single worker thread through its C API (ctypes, synchronous mode), and
hands each ~100 ms chunk of 16-bit PCM at 22050 Hz to a callback; the chunk hops
back onto the event loop (`loop.call_soon_threadsafe`) into an `asyncio.Queue`;
`PcmChunk`s flow out while the rest of the sentence is still being synthesized.

    worker:  --c1-c2-c3--|         (espeak_Synth calls back per chunk)
    stream:  --c1-c2-c3--|

Cancel: closing the iterator sets the job's `threading.Event`; the callback then
returns 1, which makes espeak abort the sentence at the next chunk. A job still
waiting for the worker is skipped.

espeak-ng keeps global state in the process (voice, rate, the callback), so every
synthesis in the process holds `_PROCESS_LOCK`, and the library is loaded and
initialized once per process (`espeak_library()`). These two are the module's only
globals, on purpose: they mirror the C library's own process-wide state.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from config.models import EspeakConfig
from providers.tts_types import PcmChunk, SpeechRequest
from providers.types import ErrorCategory, ProviderError

log = logging.getLogger(__name__)

ESPEAK_RATE = 22050
"""espeak-ng's output rate (what `espeak_Initialize` returns)."""

AUDIO_OUTPUT_SYNCHRONOUS = 2
BUFFER_MS = 100
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
ENDPAUSE = 0x1000
POS_CHARACTER = 1
PARAM_RATE = 1
EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_PROCESS_LOCK = threading.Lock()


@dataclass(eq=False)
class _Job:
    """One sentence for the worker; `emit` hands items back to the event loop."""

    text: bytes
    voice: str
    voice_from_request: bool
    rate_wpm: int
    emit: Callable[[Any], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    chunks: int = 0
    aborted: bool = False


_END = object()


class EspeakLibrary:
    """The loaded, initialized espeak-ng library (one per process; see `espeak_library`).

    Use only while holding `_PROCESS_LOCK`. `synthesize(job)` runs one sentence,
    calling `job.emit(PcmChunk)` per chunk; it returns an error text or None.
    """

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, data_path, INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise ProviderError(ErrorCategory.TRANSIENT, f"espeak_Initialize failed ({rate})")
        self.sample_rate = rate
        self._lib = lib
        self._job: _Job | None = None
        self._voice: str | None = None
        self._rate_wpm: int | None = None
        self._callback = _SynthCallback(self._on_audio)  # kept alive with the library
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: Any, count: int, _events: Any) -> int:
        job = self._job
        try:
            if job is None or job.cancel.is_set():
                if job is not None:
                    job.aborted = True
                return 1  # abort synthesis
            if wav and count > 0:
                samples = np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True)
                job.chunks += 1
                job.emit(PcmChunk(samples, self.sample_rate))
            return 0
        except Exception:  # an exception must not cross into C
            log.exception("espeak callback failed")
            return 1

    def synthesize(self, job: _Job) -> ProviderError | None:
        """Run one job to its end (or abort); None on success."""
        if job.voice != self._voice:
            if self._lib.espeak_SetVoiceByName(job.voice.encode()) != EE_OK:
                self._voice = None
                category = (
                    ErrorCategory.BAD_REQUEST if job.voice_from_request else ErrorCategory.TRANSIENT
                )
                return ProviderError(category, f"espeak-ng has no voice {job.voice!r}")
            self._voice = job.voice
            self._rate_wpm = None  # a new voice resets the rate
        if job.rate_wpm != self._rate_wpm:
            self._lib.espeak_SetParameter(PARAM_RATE, job.rate_wpm, 0)
            self._rate_wpm = job.rate_wpm
        self._job = job
        try:
            result = self._lib.espeak_Synth(
                job.text, len(job.text) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8 | ENDPAUSE, None, None
            )
        finally:
            self._job = None
        if result != EE_OK and not job.cancel.is_set():
            return ProviderError(ErrorCategory.TRANSIENT, f"espeak_Synth failed ({result})")
        return None


@functools.cache
def espeak_library() -> EspeakLibrary:
    """The process's espeak-ng library, loaded on first use. Call under `_PROCESS_LOCK`."""
    return EspeakLibrary()


@dataclass
class LocalSpeechStats:
    """Counters for tests and diagnostics (touched on the worker thread)."""

    jobs_started: int = 0
    jobs_finished: int = 0
    jobs_aborted: int = 0
    jobs_skipped: int = 0
    chunks: int = 0


class LocalSpeechProvider:
    """A `SpeechProvider` running espeak-ng in-process (no network, no keys).

    In: `EspeakConfig` (default voice, words per minute). Out: PCM chunks at
    22050 Hz per sentence. One worker thread per provider; all espeak use in the
    process is serialized by `_PROCESS_LOCK`.
    """

    def __init__(self, config: EspeakConfig, provider_id: str = "local") -> None:
        self.provider_id = provider_id
        self.model_name = "espeak-ng"
        self.stats = LocalSpeechStats()
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-espeak")
        self._active: set[threading.Event] = set()
        self._closed = False

    def sample_rate_for(self, preferred: int) -> int:
        """Always espeak's native 22050 Hz (the pipeline resamples)."""
        return ESPEAK_RATE

    async def synthesize(self, request: SpeechRequest) -> AsyncGenerator[PcmChunk, None]:
        """Yield the sentence's PCM chunks as espeak produces them.

        SpeechRequest in; `PcmChunk`s (22050 Hz) out. Raises `ProviderError`
        (BAD_REQUEST for a voice the client asked for that espeak does not have).
        Closing the generator aborts synthesis at the next chunk.
        """
        if self._closed:
            raise ProviderError(ErrorCategory.TRANSIENT, "the local speech provider is closed")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        job = _Job(
            text=request.text.encode("utf-8"),
            voice=request.voice or self._config.voice,
            voice_from_request=request.voice is not None,
            rate_wpm=self._config.rate_wpm,
            emit=emit,
            cancel=cancel,
        )
        self._active.add(cancel)
        try:
            self._executor.submit(self._run, job)
            while True:
                item = await queue.get()
                if isinstance(item, PcmChunk):
                    yield item
                elif item is _END:
                    return
                else:
                    raise item
        finally:
            cancel.set()
            self._active.discard(cancel)

    def _run(self, job: _Job) -> None:
        """Worker thread: synthesize one job unless it was cancelled while queued."""
        if job.cancel.is_set():
            self.stats.jobs_skipped += 1
            return
        self.stats.jobs_started += 1
        try:
            with _PROCESS_LOCK:
                error = espeak_library().synthesize(job)
        except Exception as exc:
            error = exc if isinstance(exc, ProviderError) else None
            if error is None:
                log.exception("espeak synthesis failed")
                error = ProviderError(ErrorCategory.TRANSIENT, f"espeak failed: {exc!r}")
        self.stats.chunks += job.chunks
        if job.aborted or job.cancel.is_set():
            self.stats.jobs_aborted += 1
            return
        self.stats.jobs_finished += 1
        job.emit(error if error is not None else _END)

    async def aclose(self) -> None:
        """Abort running synthesis and end the worker thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for cancel in list(self._active):
            cancel.set()
        await asyncio.wrap_future(self._executor.submit(lambda: None))
        self._executor.shutdown(wait=True)
