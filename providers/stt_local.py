"""The embedded speech-to-text engine: pocketsphinx (its wheel ships an en-US model).

Flow: an `SttRequest` flows in; the adapter waits for the whole segment (a
segment decoded at once is more accurate than VAD-gated frames fed into one
live utterance), decodes it on a worker thread and yields one `SttFinal`.

With `interim_results` it also yields `SttInterim`s while the segment is still
being spoken: after every `interim_interval` of new audio, the segment so far is
decoded whole (a partial decode) and its text is sent when it changed:

    audio  ──1s──────2s──────3s──|end
    events    Interim  Interim      Final

Interims are best effort: one is decoded only when a worker is idle (so they
never delay another segment's final) and never once the segment has ended (the
final is about to come). Each costs a decode of the audio so far.

- `workers` threads, each with its own `Decoder` (it is not thread-safe and
  takes ~0.6 s to create), created lazily on the thread's first segment and
  reused for every later one.
- The event loop never blocks: decoding runs in the pool via
  `run_in_executor`. When the consumer stops (cancel, disconnect, deadline), a
  decode still queued is cancelled and never runs; one already running ends on
  its own (pocketsphinx cannot be interrupted; at ~0.05-0.4x real time a
  segment of at most `max_segment` takes well under its length).
- Every segment starts from the same decoder state (the noise statistics are
  reset), so a segment's transcript does not depend on which segments the
  worker decoded before it.
- `lm_path` / `dict_path` replace the default language model and dictionary
  (e.g. a small in-domain model built with `pocketsphinx.lm.ArpaBoLM`).
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from config.models import PocketsphinxConfig
from providers.stt_types import SttEvent, SttFinal, SttInterim, SttRequest
from providers.types import ErrorCategory, ProviderError

SAMPLE_RATE = 16000


def _primary(tag: str) -> str:
    return tag.replace("_", "-").split("-")[0].lower()


class PocketsphinxProvider:
    """An `SttProvider` over pocketsphinx, one decoder per worker thread."""

    sample_rate = SAMPLE_RATE

    def __init__(self, config: PocketsphinxConfig, provider_id: str = "local") -> None:
        self.provider_id = provider_id
        self.config = config
        self.model_name = f"pocketsphinx-{config.language.lower()}"
        self._pool = ThreadPoolExecutor(
            max_workers=config.workers, thread_name_prefix="sluice-pocketsphinx"
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._decoders_created = 0
        self._busy = 0  # decodes queued or running (touched on the event loop only)

    @property
    def decoders_created(self) -> int:
        """How many decoders the worker threads have built so far (at most `workers`)."""
        return self._decoders_created

    def describe(self) -> dict[str, Any]:
        """Engine facts for the router listing."""
        return {
            "engine": "pocketsphinx",
            "language": self.config.language,
            "workers": self.config.workers,
            "custom_lm": self.config.lm_path is not None,
            "sample_rate": self.sample_rate,
        }

    async def transcribe(self, request: SttRequest) -> AsyncIterator[SttEvent]:
        """Wait for the segment's end, decode it whole on a worker, yield its `SttFinal`
        (with `interim_results`, `SttInterim`s of partial decodes before it)."""
        if request.language and _primary(request.language) != _primary(self.config.language):
            raise ProviderError(
                ErrorCategory.BAD_REQUEST,
                f"the local engine speaks {self.config.language}, not {request.language}",
                retryable=True,  # another model may speak it
            )
        if request.interim_results:
            live = bytearray()
            async for text in self._interims(request, live):
                yield SttInterim(text)
            pcm = bytes(live)
        else:
            pcm = await request.whole()
        if not pcm:
            yield SttFinal("")
            return
        yield SttFinal(await self._run_decode(pcm))

    async def _interims(self, request: SttRequest, live: bytearray) -> AsyncIterator[str]:
        """The segment's audio read live into `live`; the changed partial texts out."""
        step = int(self.config.interim_interval * SAMPLE_RATE) * 2
        decoded_through = 0
        last = ""
        async for chunk in request.chunks():
            live += chunk
            if (
                len(live) - decoded_through < step
                or request.audio.finished
                or self._busy >= self.config.workers
            ):
                continue
            decoded_through = len(live)
            text = await self._run_decode(bytes(live))
            if text and text != last:
                last = text
                yield text

    async def _run_decode(self, pcm: bytes) -> str:
        """PCM16 at 16 kHz in; its text out, decoded whole on a worker thread."""
        loop = asyncio.get_running_loop()
        self._busy += 1
        try:
            return await loop.run_in_executor(self._pool, self._decode, pcm)
        except RuntimeError as error:
            raise ProviderError(
                ErrorCategory.TRANSIENT, f"pocketsphinx failed: {error!r}"
            ) from error
        finally:
            self._busy -= 1

    async def warm_up(self) -> None:
        """Create every worker's decoder now instead of on first use (optional)."""
        barrier = threading.Barrier(self.config.workers)

        def build() -> None:
            self._decoder()
            barrier.wait(timeout=30)  # holds each thread until all have one

        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, build) for _ in range(self.config.workers))
        )

    def _decoder(self) -> Any:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            from pocketsphinx import Decoder

            options: dict[str, Any] = {"samprate": SAMPLE_RATE, "loglevel": "FATAL"}
            if self.config.lm_path is not None:
                options["lm"] = self.config.lm_path
            if self.config.dict_path is not None:
                options["dict"] = self.config.dict_path
            decoder = Decoder(**options)
            self._local.decoder = decoder
            with self._lock:
                self._decoders_created += 1
        return decoder

    def _decode(self, pcm: bytes) -> str:
        decoder = self._decoder()
        self._reset_noise_statistics(decoder)
        decoder.start_utt()
        try:
            decoder.process_raw(pcm, no_search=False, full_utt=True)
        finally:
            decoder.end_utt()
        hypothesis = decoder.hyp()
        return "" if hypothesis is None else str(hypothesis.hypstr).strip()

    def _reset_noise_statistics(self, decoder: Any) -> None:
        # The decoder's noise estimate carries over from the previous segment it
        # decoded, which made the same audio decode differently depending on what
        # that thread decoded before ("shopping list" -> "shopping read").
        # `start_stream` resets it; pocketsphinx marks it deprecated ("not
        # necessary"), so its warning is silenced, under a lock because
        # `catch_warnings` swaps process-wide state.
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            decoder.start_stream()

    async def aclose(self) -> None:
        """Stop the workers: queued decodes are cancelled, running ones finish."""
        self._pool.shutdown(wait=False, cancel_futures=True)
