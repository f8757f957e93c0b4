"""OpenAI-compatible vendors by name: octoml (Glide 0.1.0's), mistral, groq, together,
fireworks, deepseek, openrouter and vllm.

Flow: a preset key and its `OpenAIPresetConfig` come in; an `OpenAIProvider`
(the OpenAI adapter itself, no wire logic of its own) comes out, pointed at the
preset's base URL unless the config gives one, with `provider_id` = the key.
Where a vendor's API is stricter than OpenAI's, a `PresetQuirks` entry strips
what it rejects from the request body:

- mistral rejects unknown fields with 422 `extra_forbidden`, including
  `stream_options` (it sends `usage` in the last chunk anyway) and `name` on
  messages.
- groq, together, fireworks, deepseek, openrouter and vLLM accept
  `stream_options.include_usage` (OpenRouter ignores it: usage always comes).

Continuing a partial answer (the partial answer is the final assistant message):
- vLLM: `continue_final_message: true` with `add_generation_prompt: false` (the
  two are mutually exclusive).
- Mistral: `prefix: true` on that assistant message.
- DeepSeek: `prefix: true` on that assistant message, sent to its beta base URL
  (`https://api.deepseek.com/beta`) when the preset's own URL is in use.
- groq, together, fireworks, openrouter: the bare trailing assistant message
  (Groq and OpenRouter document it as prefill).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import aiohttp

from config.models import ClientConfig, OpenAIConfig, OpenAIPresetConfig
from providers.openai import OpenAIProvider
from providers.types import ChatParams, ChatProvider

PRESETS: Mapping[str, str | None] = MappingProxyType(
    {
        "octoml": "https://text.octoai.run/v1",
        "mistral": "https://api.mistral.ai/v1",
        "groq": "https://api.groq.com/openai/v1",
        "together": "https://api.together.xyz/v1",
        "fireworks": "https://api.fireworks.ai/inference/v1",
        "deepseek": "https://api.deepseek.com/v1",
        "openrouter": "https://openrouter.ai/api/v1",
        "vllm": None,  # self-hosted: the config must give base_url
    }
)


@dataclass(frozen=True, slots=True)
class PresetQuirks:
    """Where a vendor departs from OpenAI's request format.

    `stream_usage`: the vendor accepts `stream_options: {include_usage: true}`.
    `message_names`: the vendor accepts `name` on messages.
    `prefix_flag`: a continued answer's assistant message carries `prefix: true`.
    `continue_final_message`: a continued answer sets vLLM's body flags.
    `continuation_base_url`: where continuations go when the preset URL is used.
    """

    stream_usage: bool = True
    message_names: bool = True
    prefix_flag: bool = False
    continue_final_message: bool = False
    continuation_base_url: str | None = None


STANDARD = PresetQuirks()

PRESET_QUIRKS: Mapping[str, PresetQuirks] = MappingProxyType(
    {
        "mistral": PresetQuirks(stream_usage=False, message_names=False, prefix_flag=True),
        "deepseek": PresetQuirks(
            prefix_flag=True, continuation_base_url="https://api.deepseek.com/beta"
        ),
        "vllm": PresetQuirks(continue_final_message=True),
    }
)


class PresetProvider(OpenAIProvider):
    """The OpenAI adapter for a named OpenAI-compatible vendor.

    In: the equivalent `OpenAIConfig`, the model's `ClientConfig`, the shared
    session, the preset key (its `provider_id`) and the vendor's quirks. Out:
    the OpenAI adapter's `stream`, with the request body trimmed
    to what the vendor accepts.
    """

    def __init__(
        self,
        config: OpenAIConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        *,
        provider_id: str,
        quirks: PresetQuirks = STANDARD,
    ) -> None:
        super().__init__(config, client, session, provider_id=provider_id)
        self.quirks = quirks
        self.url = f"{config.base_url.rstrip('/')}{config.chat_endpoint}"
        self.continuation_url = self.url
        preset = PRESETS.get(provider_id)
        if quirks.continuation_base_url and config.base_url.rstrip("/") == preset:
            self.continuation_url = f"{quirks.continuation_base_url}{config.chat_endpoint}"

    def url_for(self, params: ChatParams) -> str:
        """The chat URL; a continuation may go to the vendor's beta URL (DeepSeek)."""
        return self.continuation_url if params.continuation is not None else self.url

    def request_body(self, params: ChatParams) -> dict[str, Any]:
        """The OpenAI adapter's body, less the fields this vendor rejects."""
        body = super().request_body(params)
        if not self.quirks.stream_usage:
            body.pop("stream_options", None)
        if not self.quirks.message_names:
            body["messages"] = [
                {k: v for k, v in message.items() if k != "name"} for message in body["messages"]
            ]
        if params.continuation is not None:
            if self.quirks.prefix_flag:
                body["messages"][-1] = {**body["messages"][-1], "prefix": True}
            if self.quirks.continue_final_message:
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        return body


def build_preset_provider(
    key: str,
    config: OpenAIPresetConfig,
    client: ClientConfig,
    session: aiohttp.ClientSession,
) -> ChatProvider:
    """The adapter for preset `key` (one of `PRESETS`).

    In: the key, its config block (`base_url` overrides the preset's), the
    model's client settings and the shared session. Out: a `PresetProvider`
    whose `provider_id` is `key`. Raises ValueError for an unknown key, or when
    neither the preset nor the config has a base URL (vllm).
    """
    if key not in PRESETS:
        raise ValueError(
            f"unknown OpenAI-compatible provider {key!r} (known: {', '.join(PRESETS)})"
        )
    base_url = config.base_url or PRESETS[key]
    if not base_url:
        raise ValueError(
            f"{key}: base_url is required for model {config.model!r} "
            f"(the {key} provider has no default URL; point it at your server, "
            f"e.g. http://127.0.0.1:8000/v1)"
        )
    openai_config = OpenAIConfig(
        base_url=base_url,
        chat_endpoint=config.chat_endpoint,
        model=config.model,
        api_key=config.api_key,
        default_params=config.default_params,
    )
    return PresetProvider(
        openai_config,
        client,
        session,
        provider_id=key,
        quirks=PRESET_QUIRKS.get(key, STANDARD),
    )
