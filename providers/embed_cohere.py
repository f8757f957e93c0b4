"""Cohere's v2 embed API: `POST {base_url}/v2/embed`.

Wire: `{"model", "texts": [...], "input_type", "embedding_types": ["float"],
"output_dimension"?}` in, `{"embeddings": {"float": [[...]]}, "meta":
{"billed_units": {"input_tokens"}}}` out. `input_type` is required by Cohere: the
request's, else the config's (`search_document`). At most 96 texts per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from config.models import ClientConfig, EmbedCohereConfig
from providers.embed_http import client_timeout, post_json
from providers.embed_types import EmbedBatch, EmbedRequest, vectors_of
from providers.types import ErrorCategory, ProviderError


def cohere_tokens(answer: dict[str, Any]) -> int:
    """`meta.billed_units.input_tokens` of a Cohere answer (0 when absent)."""
    meta = answer.get("meta")
    units = meta.get("billed_units") if isinstance(meta, dict) else None
    tokens = units.get("input_tokens", 0) if isinstance(units, dict) else 0
    return int(tokens) if isinstance(tokens, int | float) else 0


class CohereEmbeddings:
    """A Cohere embed model (v3 or v4; `output_dimension` for models that take it)."""

    dimensions = True

    def __init__(
        self,
        config: EmbedCohereConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "cohere",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.batch_size = config.batch_size
        self._input_type = config.input_type
        self._url = f"{config.base_url.rstrip('/')}/v2/embed"
        key = config.api_key.get_secret_value()
        self._headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        self._secrets = (key,)
        self._session = session
        self._timeout = client_timeout(client.connect_timeout, client.timeout)
        self._label = f"{provider_id}/{config.model}"

    def body(self, texts: Sequence[str], request: EmbedRequest) -> dict[str, Any]:
        """The v2 embed body for `texts`."""
        body: dict[str, Any] = {
            "model": self.model_name,
            "texts": list(texts),
            "input_type": request.input_type or self._input_type,
            "embedding_types": ["float"],
        }
        if request.dimensions is not None:
            body["output_dimension"] = request.dimensions
        return body

    async def embed_batch(self, texts: Sequence[str], request: EmbedRequest) -> EmbedBatch:
        """One `POST /v2/embed` for `texts`."""
        answer = await post_json(
            self._session,
            self._url,
            self.body(texts, request),
            headers=self._headers,
            timeout=self._timeout,
            label=self._label,
            secrets=self._secrets,
        )
        embeddings = answer.get("embeddings")
        if not isinstance(embeddings, dict):
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: the answer has no `embeddings` object"
            )
        return EmbedBatch(vectors_of(embeddings.get("float"), self._label), cohere_tokens(answer))

    async def aclose(self) -> None:
        """Nothing to release (the session is the app's)."""
