"""Gemini embeddings: `models/{model}:embedContent` for one text,
`models/{model}:batchEmbedContents` for more (at most 100 per call).

Wire (one): `{"content": {"parts": [{"text"}]}, "taskType"?, "outputDimensionality"?}`
in, `{"embedding": {"values": [...]}}` out. Batch: `{"requests": [{"model":
"models/{model}", "content", ...}]}` in, `{"embeddings": [{"values"}]}` out. The
key travels in the `x-goog-api-key` header. Gemini reports no token count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from config.models import ClientConfig, EmbedGeminiConfig
from providers.embed_http import client_timeout, post_json
from providers.embed_types import EmbedBatch, EmbedRequest, vectors_of
from providers.types import ErrorCategory, ProviderError

TASK_TYPES = {
    "search_document": "RETRIEVAL_DOCUMENT",
    "search_query": "RETRIEVAL_QUERY",
    "classification": "CLASSIFICATION",
    "clustering": "CLUSTERING",
}
"""Sluice's `input_type` -> Gemini's `taskType`."""


class GeminiEmbeddings:
    """A Gemini embedding model (gemini-embedding-001, text-embedding-004, ...)."""

    dimensions = True

    def __init__(
        self,
        config: EmbedGeminiConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "gemini",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.batch_size = config.batch_size
        model = quote(config.model, safe="")
        base = f"{config.base_url.rstrip('/')}/models/{model}"
        self._one_url = f"{base}:embedContent"
        self._batch_url = f"{base}:batchEmbedContents"
        key = config.api_key.get_secret_value()
        self._headers = {"x-goog-api-key": key}
        self._secrets = (key,)
        self._session = session
        self._timeout = client_timeout(client.connect_timeout, client.timeout)
        self._label = f"{provider_id}/{config.model}"

    def content(self, text: str, request: EmbedRequest) -> dict[str, Any]:
        """One text's request object (without `model`)."""
        item: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
        if request.input_type is not None:
            item["taskType"] = TASK_TYPES[request.input_type]
        if request.dimensions is not None:
            item["outputDimensionality"] = request.dimensions
        return item

    async def embed_batch(self, texts: Sequence[str], request: EmbedRequest) -> EmbedBatch:
        """`embedContent` for one text, `batchEmbedContents` for several."""
        if len(texts) == 1:
            answer = await self._post(self._one_url, self.content(texts[0], request))
            embedding = answer.get("embedding")
            values = embedding.get("values") if isinstance(embedding, dict) else None
            return EmbedBatch(vectors_of([values], self._label))
        name = f"models/{self.model_name}"
        body = {"requests": [{"model": name, **self.content(t, request)} for t in texts]}
        answer = await self._post(self._batch_url, body)
        embeddings = answer.get("embeddings")
        if not isinstance(embeddings, list) or not all(isinstance(e, dict) for e in embeddings):
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: the answer has no `embeddings` list"
            )
        return EmbedBatch(vectors_of([e.get("values") for e in embeddings], self._label))

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        return await post_json(
            self._session,
            url,
            body,
            headers=self._headers,
            timeout=self._timeout,
            label=self._label,
            secrets=self._secrets,
        )

    async def aclose(self) -> None:
        """Nothing to release (the session is the app's)."""
