"""How each adapter puts a partial answer on the wire, and which adapters continue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr

from config.models import AnthropicConfig, ClientConfig, LanguageModelConfig, OpenAIPresetConfig
from fakes.anthropic_server import FakeAnthropic, run_fake_anthropic
from fakes.openai_server import run_fake_openai
from providers.anthropic import AnthropicProvider
from providers.presets import PresetProvider, build_preset_provider
from providers.registry import build_chat_provider
from providers.types import ChatDelta, ChatParams, Continuation, Message

KEY = "sk-wire-0123456789abcdef"
BASE = (Message("system", "be brief"), Message("user", "hi"))
CONTINUED = ChatParams(BASE, {}, Continuation("The quick ", "Go on."))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def preset(key: str, session: aiohttp.ClientSession, base_url: str | None = None) -> PresetProvider:
    """The preset adapter for `key`."""
    config = OpenAIPresetConfig(base_url=base_url, model="m", api_key=SecretStr(KEY))
    provider = build_preset_provider(key, config, ClientConfig(), session)
    assert isinstance(provider, PresetProvider)
    return provider


EXPECTED_MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "system", "content": "Go on."},
    {"role": "user", "content": "hi"},
]


@pytest.mark.parametrize(
    ("key", "last", "flags"),
    [
        ("groq", {"role": "assistant", "content": "The quick "}, {}),
        ("mistral", {"role": "assistant", "content": "The quick ", "prefix": True}, {}),
        ("deepseek", {"role": "assistant", "content": "The quick ", "prefix": True}, {}),
        (
            "vllm",
            {"role": "assistant", "content": "The quick "},
            {"continue_final_message": True, "add_generation_prompt": False},
        ),
    ],
)
def test_openai_compatible_presets_send_the_partial_answer_last(
    session: aiohttp.ClientSession, key: str, last: dict[str, object], flags: dict[str, bool]
) -> None:
    provider = preset(key, session, "http://127.0.0.1:9/v1" if key == "vllm" else None)
    body = provider.request_body(CONTINUED)
    assert body["messages"] == [*EXPECTED_MESSAGES, last]
    for flag, value in flags.items():
        assert body[flag] is value
    plain = provider.request_body(ChatParams(BASE))
    assert "continue_final_message" not in plain and plain["messages"][-1]["role"] == "user"


def test_deepseek_continues_on_its_beta_url_unless_pointed_elsewhere(
    session: aiohttp.ClientSession,
) -> None:
    hosted = preset("deepseek", session)
    assert hosted.url_for(CONTINUED) == "https://api.deepseek.com/beta/chat/completions"
    assert hosted.url_for(ChatParams(BASE)) == "https://api.deepseek.com/v1/chat/completions"
    proxied = preset("deepseek", session, "http://127.0.0.1:9/v1")
    assert proxied.url_for(CONTINUED) == "http://127.0.0.1:9/v1/chat/completions"


def test_anthropic_prefill_loses_its_trailing_whitespace(
    session: aiohttp.ClientSession,
) -> None:
    provider = AnthropicProvider(AnthropicConfig(api_key=SecretStr(KEY)), ClientConfig(), session)
    body = provider.request_body(CONTINUED)
    assert body["system"] == "be brief\n\nGo on."
    assert body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "The quick"},
    ]


@pytest.mark.parametrize(
    ("block", "continues"),
    [
        ({"openai": {}}, True),
        ({"anthropic": {"api_key": KEY}}, True),
        ({"mistral": {"model": "m"}}, True),
        ({"cohere": {"api_key": KEY}}, False),
        ({"gemini": {"api_key": KEY}}, False),
        ({"ollama": {}}, False),
        (
            {"bedrock": {"access_key_id": "AKIA0000", "secret_access_key": "s" * 40}},
            False,
        ),
    ],
)
def test_each_adapter_declares_whether_it_continues(
    session: aiohttp.ClientSession, block: dict[str, object], continues: bool
) -> None:
    model = LanguageModelConfig.model_validate({"id": "m", **block})
    assert build_chat_provider(model, session).continues is continues


async def test_the_openai_fake_continues_from_a_trailing_assistant_message(
    session: aiohttp.ClientSession,
) -> None:
    async with run_fake_openai() as fake:
        fake.script.chunks = ["The quick ", "brown fox."]
        provider = preset("vllm", session, fake.url)
        got = [d async for d in provider.stream(CONTINUED)]
    assert "".join(d.content for d in got) == "brown fox."
    assert got[-1].finish_reason == "complete"


async def test_the_anthropic_fake_continues_and_the_seam_has_one_space(
    session: aiohttp.ClientSession,
) -> None:
    fake: FakeAnthropic
    async with run_fake_anthropic() as fake:
        fake.script.chunks = ["The quick ", "brown fox."]
        config = AnthropicConfig(base_url=fake.url, api_key=SecretStr(KEY))
        provider = AnthropicProvider(config, ClientConfig(), session)
        got: list[ChatDelta] = [d async for d in provider.stream(CONTINUED)]
        # the real API refuses a prefill that ends in whitespace: so does the fake
        sent = fake.stats.last_body
    assert "".join(d.content for d in got) == "brown fox."
    assert sent is not None and sent["messages"][-1]["content"] == "The quick"
