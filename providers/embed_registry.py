"""Build the embedding adapter for a configured model (the only switch on vendor).

An `EmbeddingModelConfig` and the app's shared HTTP session flow in; an
`EmbeddingProvider` flows out. Adapters are imported lazily, so a config
without the local engine never loads llama.cpp.
"""

from __future__ import annotations

import aiohttp

from config.models import (
    EmbedAzureConfig,
    EmbedBedrockConfig,
    EmbedCohereConfig,
    EmbeddingModelConfig,
    EmbedGeminiConfig,
    EmbedLocalConfig,
    EmbedOllamaConfig,
    EmbedOpenAIConfig,
)
from providers.embed_types import EmbeddingProvider


def build_embedding_provider(
    model: EmbeddingModelConfig, session: aiohttp.ClientSession
) -> EmbeddingProvider:
    """The adapter for `model`'s provider block."""
    block = model.provider_config
    client = model.client
    if isinstance(block, EmbedOpenAIConfig):
        from providers.embed_openai import OpenAIEmbeddings

        return OpenAIEmbeddings(block, client, session)
    if isinstance(block, EmbedAzureConfig):
        from providers.embed_openai import AzureEmbeddings

        return AzureEmbeddings(block, client, session)
    if isinstance(block, EmbedCohereConfig):
        from providers.embed_cohere import CohereEmbeddings

        return CohereEmbeddings(block, client, session)
    if isinstance(block, EmbedGeminiConfig):
        from providers.embed_gemini import GeminiEmbeddings

        return GeminiEmbeddings(block, client, session)
    if isinstance(block, EmbedOllamaConfig):
        from providers.embed_ollama import OllamaEmbeddings

        return OllamaEmbeddings(block, client, session)
    if isinstance(block, EmbedBedrockConfig):
        from providers.embed_bedrock import BedrockEmbeddings

        return BedrockEmbeddings(block, client, session)
    if isinstance(block, EmbedLocalConfig):
        from providers.embed_local import LocalEmbeddings

        return LocalEmbeddings(block)
    raise ValueError(f"model {model.id!r}: no embedding adapter for {model.provider_key!r}")
