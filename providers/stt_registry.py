"""Build the speech-to-text adapter for a configured listen model (the only vendor switch).

A `ListenModelConfig` and the app's HTTP session flow in; an `SttProvider`
flows out. Adapters are imported lazily, so a router without the local engine
never loads pocketsphinx.
"""

from __future__ import annotations

import aiohttp

from config.models import (
    DeepgramConfig,
    ListenModelConfig,
    OpenAITranscriptionConfig,
    PocketsphinxConfig,
)
from providers.stt_types import SttProvider


def build_stt_provider(model: ListenModelConfig, session: aiohttp.ClientSession) -> SttProvider:
    """The adapter for `model`'s provider block."""
    block = model.provider_config
    if isinstance(block, PocketsphinxConfig):
        from providers.stt_local import PocketsphinxProvider

        return PocketsphinxProvider(block)
    if isinstance(block, OpenAITranscriptionConfig):
        from providers.stt_openai import OpenAITranscriptionProvider

        return OpenAITranscriptionProvider(block, model.client, session)
    if isinstance(block, DeepgramConfig):
        from providers.stt_deepgram import DeepgramProvider

        return DeepgramProvider(block, model.client, session)
    raise ValueError(f"model {model.id!r} has no speech-to-text provider block")
