"""The Azure OpenAI adapter: OpenAI's wire format at Azure's deployment URL.

Flow: as `providers.openai` — `ChatParams` in, `ChatDelta`s out —
 sent to `{base_url}/openai/deployments/{model}{chat_endpoint}?api-version=...`
with an `api-key` header.
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from config.models import AzureOpenAIConfig, ClientConfig
from providers.openai import OpenAIWireProvider


class AzureOpenAIProvider(OpenAIWireProvider):
    """An Azure OpenAI deployment; `config.model` is the deployment name."""

    def __init__(
        self,
        config: AzureOpenAIConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "azureopenai",
    ) -> None:
        key = config.api_key.get_secret_value()
        deployment = quote(config.model, safe="")
        super().__init__(
            provider_id=provider_id,
            model_name=config.model,
            url=(
                f"{config.base_url.rstrip('/')}/openai/deployments/{deployment}"
                f"{config.chat_endpoint}"
            ),
            query={"api-version": config.api_version},
            headers={"api-key": key},
            default_params=config.default_params,
            client=client,
            session=session,
            secrets=(key,) if key else (),
        )
