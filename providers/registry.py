"""Build the provider adapter for a configured model (the only switch on vendor).

A `LanguageModelConfig` and the app's shared HTTP session flow in; a
`ChatProvider` flows out. Adapters are imported lazily so a config that does not
use the local engine never loads llama.cpp.
"""

from __future__ import annotations

import aiohttp

from config.models import AzureOpenAIConfig, LanguageModelConfig, LocalLLMConfig, OpenAIConfig
from providers.types import ChatProvider


def build_chat_provider(model: LanguageModelConfig, session: aiohttp.ClientSession) -> ChatProvider:
    """The adapter for `model`'s provider block."""
    block = model.provider_config
    if isinstance(block, OpenAIConfig):
        from providers.openai import OpenAIProvider

        return OpenAIProvider(block, model.client, session)
    if isinstance(block, AzureOpenAIConfig):
        from providers.azure import AzureOpenAIProvider

        return AzureOpenAIProvider(block, model.client, session)
    if isinstance(block, LocalLLMConfig):
        from providers.local_llm import LocalLLMProvider

        return LocalLLMProvider(block)
    raise ValueError(f"model {model.id!r}: no adapter for provider {model.provider_key!r}")
