"""OpenAI-compatible and Azure OpenAI embeddings: `POST .../embeddings`.

Wire: `{"model", "input": [texts], "encoding_format": "float", "dimensions"?}` in,
`{"data": [{"index", "embedding": [floats]}], "usage": {"prompt_tokens"}}` out
(vectors are put back in `index` order). Azure takes the same body at
`{base_url}/openai/deployments/{deployment}/embeddings?api-version=...` with an
`api-key` header and no `model` field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from config.models import ClientConfig, EmbedAzureConfig, EmbedOpenAIConfig
from providers.embed_http import client_timeout, post_json
from providers.embed_types import EmbedBatch, EmbedRequest, vectors_of
from providers.types import ErrorCategory, ProviderError


def openai_body(model: str | None, texts: Sequence[str], request: EmbedRequest) -> dict[str, Any]:
    """The request body (no `model` for Azure, whose URL names the deployment)."""
    body: dict[str, Any] = {"input": list(texts), "encoding_format": "float"}
    if model is not None:
        body["model"] = model
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def openai_answer(answer: dict[str, Any], label: str) -> EmbedBatch:
    """The answer's vectors in `index` order and its prompt tokens."""
    data = answer.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ProviderError(ErrorCategory.PROTOCOL, f"{label}: the answer has no `data` list")
    ordered = sorted(data, key=lambda item: item.get("index", 0))
    vectors = vectors_of([item.get("embedding") for item in ordered], label)
    usage = answer.get("usage")
    tokens = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
    return EmbedBatch(vectors, tokens if isinstance(tokens, int) else 0)


class OpenAIEmbeddings:
    """An OpenAI-compatible embedding model (OpenAI, vLLM, Mistral, ...)."""

    dimensions = True

    def __init__(
        self,
        config: EmbedOpenAIConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "openai",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.batch_size = config.batch_size
        self._url = f"{config.base_url.rstrip('/')}{config.embed_endpoint}"
        key = config.api_key.get_secret_value() if config.api_key else None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._secrets = (key,) if key else ()
        self._session = session
        self._timeout = client_timeout(client.connect_timeout, client.timeout)
        self._label = f"{provider_id}/{config.model}"

    async def embed_batch(self, texts: Sequence[str], request: EmbedRequest) -> EmbedBatch:
        """One `POST /embeddings` for `texts`."""
        answer = await post_json(
            self._session,
            self._url,
            openai_body(self.model_name, texts, request),
            headers=self._headers,
            timeout=self._timeout,
            label=self._label,
            secrets=self._secrets,
        )
        return openai_answer(answer, self._label)

    async def aclose(self) -> None:
        """Nothing to release (the session is the app's)."""


class AzureEmbeddings:
    """An Azure OpenAI embeddings deployment."""

    dimensions = True

    def __init__(
        self,
        config: EmbedAzureConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "azureopenai",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.batch_size = config.batch_size
        deployment = quote(config.model, safe="")
        self._url = (
            f"{config.base_url.rstrip('/')}/openai/deployments/{deployment}/embeddings"
            f"?api-version={quote(config.api_version, safe='')}"
        )
        key = config.api_key.get_secret_value()
        self._headers = {"api-key": key}
        self._secrets = (key,)
        self._session = session
        self._timeout = client_timeout(client.connect_timeout, client.timeout)
        self._label = f"{provider_id}/{config.model}"

    async def embed_batch(self, texts: Sequence[str], request: EmbedRequest) -> EmbedBatch:
        """One `POST .../embeddings?api-version=` for `texts`."""
        answer = await post_json(
            self._session,
            self._url,
            openai_body(None, texts, request),
            headers=self._headers,
            timeout=self._timeout,
            label=self._label,
            secrets=self._secrets,
        )
        return openai_answer(answer, self._label)

    async def aclose(self) -> None:
        """Nothing to release (the session is the app's)."""
