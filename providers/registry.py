"""Build the provider adapter for a configured model (the only switch on vendor).

A `LanguageModelConfig` and the app's shared HTTP session flow in; a
`ChatProvider` flows out. Adapters are imported lazily so a config that does not
use the local engine never loads llama.cpp.
"""

from __future__ import annotations

import aiohttp

from config.models import (
    AnthropicConfig,
    AzureOpenAIConfig,
    BedrockConfig,
    CohereConfig,
    GeminiConfig,
    LanguageModelConfig,
    LocalLLMConfig,
    OllamaConfig,
    OpenAIConfig,
    OpenAIPresetConfig,
)
from providers.types import ChatProvider


def build_chat_provider(model: LanguageModelConfig, session: aiohttp.ClientSession) -> ChatProvider:
    """The adapter for `model`'s provider block."""
    block = model.provider_config
    client = model.client
    if isinstance(block, OpenAIConfig):
        from providers.openai import OpenAIProvider

        return OpenAIProvider(block, client, session)
    if isinstance(block, OpenAIPresetConfig):
        from providers.presets import build_preset_provider

        return build_preset_provider(model.provider_key, block, client, session)
    if isinstance(block, AzureOpenAIConfig):
        from providers.azure import AzureOpenAIProvider

        return AzureOpenAIProvider(block, client, session)
    if isinstance(block, LocalLLMConfig):
        from providers.local_llm import LocalLLMProvider

        return LocalLLMProvider(block)
    if isinstance(block, AnthropicConfig):
        from providers.anthropic import AnthropicProvider

        return AnthropicProvider(block, client, session)
    if isinstance(block, CohereConfig):
        from providers.cohere import CohereProvider

        return CohereProvider(block, client, session)
    if isinstance(block, GeminiConfig):
        from providers.gemini import GeminiProvider

        return GeminiProvider(block, client, session)
    if isinstance(block, OllamaConfig):
        from providers.ollama import OllamaProvider

        return OllamaProvider(block, client, session)
    if isinstance(block, BedrockConfig):
        from providers.bedrock import BedrockProvider

        return BedrockProvider(block, client, session)
    raise ValueError(f"model {model.id!r}: no adapter for provider {model.provider_key!r}")
