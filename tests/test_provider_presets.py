"""OpenAI-compatible presets: URLs, provider ids, quirks, and a stream through the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr

from config.models import OPENAI_PRESET_KEYS, ClientConfig, LanguageModelConfig, OpenAIPresetConfig
from fakes.openai_server import FakeOpenAI, run_fake_openai
from providers.openai import OpenAIProvider
from providers.presets import PRESETS, PresetProvider, build_preset_provider
from providers.registry import build_chat_provider
from providers.types import ChatParams, ErrorCategory, Message, ProviderError, TokenUsage

KEY = "sk-preset-0123456789abcdef"
PARAMS = ChatParams(messages=(Message("system", "be brief"), Message("user", "hi", name="ann")))


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


def test_every_config_preset_key_has_a_preset() -> None:
    assert set(PRESETS) == set(OPENAI_PRESET_KEYS)
    with pytest.raises(TypeError):
        PRESETS["groq"] = "http://elsewhere"  # type: ignore[index]


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("mistral", "https://api.mistral.ai/v1/chat/completions"),
        ("groq", "https://api.groq.com/openai/v1/chat/completions"),
        ("together", "https://api.together.xyz/v1/chat/completions"),
        ("fireworks", "https://api.fireworks.ai/inference/v1/chat/completions"),
        ("deepseek", "https://api.deepseek.com/v1/chat/completions"),
        ("openrouter", "https://openrouter.ai/api/v1/chat/completions"),
    ],
)
async def test_each_preset_points_at_its_vendor(
    session: aiohttp.ClientSession, key: str, url: str
) -> None:
    config = OpenAIPresetConfig(model="some-model", api_key=SecretStr(KEY))
    provider = build_preset_provider(key, config, ClientConfig(), session)
    assert isinstance(provider, PresetProvider)
    assert isinstance(provider, OpenAIProvider)
    assert provider.provider_id == key
    assert provider.model_name == "some-model"
    assert provider.url == url


async def test_registry_dispatches_presets_by_block_name(session: aiohttp.ClientSession) -> None:
    model = LanguageModelConfig.model_validate(
        {"id": "fast", "groq": {"model": "llama-3.1-8b-instant", "api_key": KEY}}
    )
    provider = build_chat_provider(model, session)
    assert isinstance(provider, PresetProvider)
    assert (provider.provider_id, provider.model_name) == ("groq", "llama-3.1-8b-instant")


async def test_vllm_without_base_url_fails_clearly(session: aiohttp.ClientSession) -> None:
    config = OpenAIPresetConfig(model="meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(ValueError, match=r"^vllm: base_url is required for model 'meta-llama"):
        build_preset_provider("vllm", config, ClientConfig(), session)


async def test_unknown_preset_key_fails(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="unknown OpenAI-compatible provider 'nope'"):
        build_preset_provider("nope", OpenAIPresetConfig(model="m"), ClientConfig(), session)


@pytest.mark.parametrize("key", ["vllm", "groq", "deepseek"])
async def test_preset_streams_through_the_fake_with_base_url_overridden(
    fake: FakeOpenAI, session: aiohttp.ClientSession, key: str
) -> None:
    config = OpenAIPresetConfig(
        base_url=fake.url,
        model="served-model",
        api_key=SecretStr(KEY),
        default_params={"temperature": 0.2},
    )
    provider = build_preset_provider(key, config, ClientConfig(), session)
    deltas = [d async for d in provider.stream(PARAMS)]
    assert [d.content for d in deltas] == ["Hello", " from", " fake", ""]
    assert deltas[-1].finish_reason == "complete"
    assert deltas[-1].usage == TokenUsage(prompt_tokens=7, response_tokens=3, total_tokens=10)
    assert fake.stats.last_headers["Authorization"] == f"Bearer {KEY}"
    assert fake.stats.last_body == {
        "temperature": 0.2,
        "model": "served-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi", "name": "ann"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    fake.script.fault = "http_401"
    with pytest.raises(ProviderError) as caught:
        async for _ in provider.stream(PARAMS):
            pass
    assert caught.value.category is ErrorCategory.AUTH
    assert caught.value.message.startswith(f"{key}/served-model: ")


async def test_mistral_body_leaves_out_what_mistral_rejects(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    config = OpenAIPresetConfig(base_url=fake.url, model="mistral-small-latest")
    provider = build_preset_provider("mistral", config, ClientConfig(), session)
    deltas = [d async for d in provider.stream(PARAMS)]
    assert "".join(d.content for d in deltas) == "Hello from fake"
    assert deltas[-1].finish_reason == "complete"
    assert "Authorization" not in fake.stats.last_headers
    assert fake.stats.last_body == {
        "model": "mistral-small-latest",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "stream": True,
    }
