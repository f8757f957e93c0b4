"""AWS Bedrock embeddings through InvokeModel, SigV4-signed like the chat adapter.

POST `{endpoint}/model/{model id}/invoke`; the body follows the model family:
- Titan text embeddings (`amazon.titan-embed-text-*`): one text per call,
  `{"inputText", "dimensions"?}` in, `{"embedding": [...], "inputTextTokenCount"}` out.
- Cohere embed (`cohere.embed-*`): up to 96 texts, `{"texts", "input_type"}` in,
  `{"embeddings": [[...]]}` (or `{"embeddings": {"float": [[...]]}}`) out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from yarl import URL

from config.models import ClientConfig, EmbedBedrockConfig
from providers.bedrock import SIGNING_SERVICE
from providers.embed_http import client_timeout, post_json
from providers.embed_types import EmbedBatch, EmbedRequest, vectors_of
from providers.types import ErrorCategory, ProviderError


class BedrockEmbeddings:
    """A Titan or Cohere embedding model on Bedrock (the model id picks the body)."""

    def __init__(
        self,
        config: EmbedBedrockConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "bedrock",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.cohere = ".cohere.embed" in f".{config.model}" or config.model.startswith("cohere.")
        self.batch_size = config.batch_size or (96 if self.cohere else 1)
        # Titan v2 takes `dimensions` (256, 512, 1024); Titan v1 and Cohere v3 do not
        self.dimensions = "titan-embed-text-v2" in config.model
        endpoint = config.base_url or f"https://bedrock-runtime.{config.region}.amazonaws.com"
        self.url = f"{endpoint.rstrip('/')}/model/{quote(config.model, safe='')}/invoke"
        secret = config.secret_access_key.get_secret_value()
        token = config.session_token.get_secret_value() if config.session_token else None
        self._signer = SigV4Auth(
            Credentials(config.access_key_id.get_secret_value(), secret, token),
            SIGNING_SERVICE,
            config.region,
        )
        self._secrets = tuple(s for s in (secret, token) if s)
        self._input_type = config.input_type
        self._session = session
        self._timeout = client_timeout(client.connect_timeout, client.timeout)
        self._label = f"{provider_id}/{config.model}"

    def body(self, texts: Sequence[str], request: EmbedRequest) -> dict[str, Any]:
        """The InvokeModel body for `texts` in the model family's shape."""
        if self.cohere:
            return {"texts": list(texts), "input_type": request.input_type or self._input_type}
        body: dict[str, Any] = {"inputText": texts[0]}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        return body

    def signed_headers(self, body: bytes) -> dict[str, str]:
        """SigV4 headers for POSTing `body` to this model's invoke URL."""
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Host": URL(self.url, encoded=True).host_port_subcomponent or "",
        }
        request = AWSRequest(method="POST", url=self.url, data=body, headers=headers)
        self._signer.add_auth(request)
        return {str(name): str(value) for name, value in request.headers.items()}

    async def embed_batch(self, texts: Sequence[str], request: EmbedRequest) -> EmbedBatch:
        """One InvokeModel call for `texts` (one text for Titan)."""
        data = json.dumps(self.body(texts, request), separators=(",", ":")).encode()
        answer = await post_json(
            self._session,
            URL(self.url, encoded=True),  # keep the model id's %3A exactly as signed
            data,
            headers=self.signed_headers(data),
            timeout=self._timeout,
            label=self._label,
            secrets=self._secrets,
        )
        if self.cohere:
            raw = answer.get("embeddings")
            if isinstance(raw, dict):
                raw = raw.get("float")
            return EmbedBatch(vectors_of(raw, self._label))
        if "embedding" not in answer:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: the answer has no `embedding`"
            )
        tokens = answer.get("inputTextTokenCount", 0)
        return EmbedBatch(
            vectors_of([answer["embedding"]], self._label),
            tokens if isinstance(tokens, int) else 0,
        )

    async def aclose(self) -> None:
        """Nothing to release (the session is the app's)."""
