"""Ollama's `POST {base_url}/api/embed`.

Wire: `{"model", "input": [texts], "dimensions"?}` in, `{"embeddings": [[...]],
"prompt_eval_count"}` out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from config.models import ClientConfig, EmbedOllamaConfig
from providers.embed_http import client_timeout, post_json
from providers.embed_types import EmbedBatch, EmbedRequest, vectors_of


class OllamaEmbeddings:
    """An embedding model served by Ollama (nomic-embed-text, all-minilm, ...)."""

    dimensions = True

    def __init__(
        self,
        config: EmbedOllamaConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "ollama",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.batch_size = config.batch_size
        self._url = f"{config.base_url.rstrip('/')}/api/embed"
        self._session = session
        self._timeout = client_timeout(client.connect_timeout, client.timeout)
        self._label = f"{provider_id}/{config.model}"

    async def embed_batch(self, texts: Sequence[str], request: EmbedRequest) -> EmbedBatch:
        """One `POST /api/embed` for `texts`."""
        body: dict[str, Any] = {"model": self.model_name, "input": list(texts)}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        answer = await post_json(
            self._session, self._url, body, headers={}, timeout=self._timeout, label=self._label
        )
        tokens = answer.get("prompt_eval_count", 0)
        return EmbedBatch(
            vectors_of(answer.get("embeddings"), self._label),
            tokens if isinstance(tokens, int) else 0,
        )

    async def aclose(self) -> None:
        """Nothing to release (the session is the app's)."""
