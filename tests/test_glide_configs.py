"""Glide 0.1.0 config files load unchanged and serve: one file per provider block.

Each file in `tests/glide_configs/` is a provider block as Glide 0.1.0's docs and
config structs write it; only the upstream host is the matching fake server's.
Each is loaded by Sluice's loader, served, and one Glide chat request goes through
it; the fake records what the adapter sent, which shows each Glide field (URL
parts, headers, `default_params`) took effect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from config import ConfigError, load_config
from config.models import BedrockConfig, CohereConfig, LanguageModelConfig
from fakes.anthropic_server import run_fake_anthropic
from fakes.bedrock_server import run_fake_bedrock
from fakes.cohere_server import run_fake_cohere
from fakes.common import FakeStats, RunningStreamFake
from fakes.ollama_server import run_fake_ollama
from fakes.openai_server import run_fake_openai
from tests.conftest import MakeClient

CONFIGS = Path(__file__).parent / "glide_configs"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYGLIDEKEY"

Fake = RunningStreamFake[Any, Any]


@asynccontextmanager
async def openai_fake() -> AsyncIterator[tuple[Fake, str]]:
    """The OpenAI fake and its bare origin (Glide's `base_url` adds `/v1`)."""
    async with run_fake_openai() as fake:
        yield fake, fake.root


@asynccontextmanager
async def origin_fake(
    run: Callable[[], AbstractAsyncContextManager[Any]],
) -> AsyncIterator[tuple[Fake, str]]:
    """A fake whose `url` is its bare origin."""
    async with run() as fake:
        yield fake, fake.url


@asynccontextmanager
async def bedrock_fake() -> AsyncIterator[tuple[Fake, str]]:
    """The Bedrock fake, verifying SigV4 signatures made with `AWS_SECRET`."""
    async with run_fake_bedrock() as fake:
        fake.script.secret_access_key = AWS_SECRET
        yield fake, fake.url


def check_openai(stats: FakeStats) -> None:
    """OpenAI: Glide's URL parts, bearer key, model and default params."""
    assert stats.last_path == "/v1/chat/completions"
    assert stats.last_headers["Authorization"] == "Bearer sk-glide-openai"
    body = stats.last_body
    assert body is not None
    assert body["model"] == "gpt-3.5-turbo"
    expected = {"temperature": 0.8, "top_p": 1, "max_tokens": 100, "n": 1, "seed": 42}
    assert {k: body[k] for k in expected} == expected
    assert (body["frequency_penalty"], body["presence_penalty"]) == (0, 0)


def check_azure(stats: FakeStats) -> None:
    """Azure: deployment path, Glide's api_version, api-key header."""
    assert stats.last_path == "/openai/deployments/gpt-35-turbo/chat/completions"
    assert stats.last_query == {"api-version": "2023-05-15"}
    assert stats.last_headers["api-key"] == "az-glide-key"
    assert stats.last_body is not None
    assert (stats.last_body["max_tokens"], stats.last_body["seed"]) == (100, 42)


def check_anthropic(stats: FakeStats) -> None:
    """Anthropic: `base_url` ending in /v1 plus `/messages`; Glide's `system` and `stop`."""
    assert stats.last_path == "/v1/messages"
    assert stats.last_headers["x-api-key"] == "sk-ant-glide"
    assert stats.last_headers["anthropic-version"] == "2023-06-01"
    body = stats.last_body
    assert body is not None
    assert body["model"] == "claude-instant-1.2"
    assert body["system"] == "You are a helpful assistant."
    assert (body["temperature"], body["max_tokens"]) == (1, 250)
    assert body["stop_sequences"] == ["\n\nHuman:"]
    assert "stop" not in body


def check_cohere(stats: FakeStats) -> None:
    """Cohere: Glide's v1 URL (`/v1` + `/chat`) speaks v1, with Glide's v1 params."""
    assert stats.last_path == "/v1/chat"
    assert stats.last_headers["Authorization"] == "Bearer co-glide-key"
    body = stats.last_body
    assert body is not None
    assert (body["model"], body["message"], body["chat_history"]) == ("command-light", "hi", [])
    assert body["preamble"] == "You are a helpful assistant."
    assert (body["temperature"], body["p"], body["k"]) == (0.3, 0.75, 0)


def check_bedrock(stats: FakeStats) -> None:
    """Bedrock: `chat_endpoint` (/model) prefixes the model; Glide's params fill inferenceConfig."""
    assert stats.last_path in (
        "/model/amazon.titan-text-express-v1/converse",
        "/model/amazon.titan-text-express-v1/converse-stream",
    )
    assert "/eu-west-3/bedrock/" in stats.last_headers["Authorization"]
    assert "AKIDGLIDEEXAMPLE" in stats.last_headers["Authorization"]
    body = stats.last_body
    assert body is not None
    assert body["inferenceConfig"] == {
        "temperature": 0,
        "topP": 1,
        "maxTokens": 512,
        "stopSequences": ["User:"],
    }
    assert "additionalModelRequestFields" not in body


def check_octoml(stats: FakeStats) -> None:
    """OctoML: an OpenAI-compatible endpoint with Glide's block and params."""
    assert stats.last_path == "/v1/chat/completions"
    assert stats.last_headers["Authorization"] == "Bearer octo-glide-key"
    body = stats.last_body
    assert body is not None
    assert body["model"] == "mistral-7b-instruct-fp16"
    assert (body["temperature"], body["max_tokens"], body["stop"]) == (1, 100, [""])


def check_ollama(stats: FakeStats) -> None:
    """Ollama: `chat_endpoint`; Glide's params (`microstat*` spelled Ollama's way) as options."""
    assert stats.last_path == "/api/chat"
    assert "Authorization" not in stats.last_headers
    body = stats.last_body
    assert body is not None
    assert body["model"] == "llama3"
    assert body["options"] == {
        "temperature": 0.8,
        "top_p": 0.9,
        "top_k": 40,
        "num_ctx": 2048,
        "mirostat": 2,
        "mirostat_tau": 5.0,
        "num_predict": 128,
        "stop": ["<|eot_id|>"],
    }


@dataclass(frozen=True)
class GlideFile:
    """One Glide config file, the fake it is served against and what must arrive there."""

    provider: str
    fake: Callable[[], AbstractAsyncContextManager[tuple[Fake, str]]]
    env: dict[str, str]
    check: Callable[[FakeStats], None]


FILES = [
    GlideFile("openai", openai_fake, {"OPENAI_API_KEY": "sk-glide-openai"}, check_openai),
    GlideFile("azureopenai", openai_fake, {"AZURE_OPENAI_API_KEY": "az-glide-key"}, check_azure),
    GlideFile(
        "anthropic",
        lambda: origin_fake(run_fake_anthropic),
        {"ANTHROPIC_API_KEY": "sk-ant-glide"},
        check_anthropic,
    ),
    GlideFile(
        "cohere",
        lambda: origin_fake(run_fake_cohere),
        {"COHERE_API_KEY": "co-glide-key"},
        check_cohere,
    ),
    GlideFile(
        "bedrock",
        bedrock_fake,
        {
            "AWS_BEDROCK_API_KEY": "unused-glide-key",
            "AWS_ACCESS_KEY_ID": "AKIDGLIDEEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        },
        check_bedrock,
    ),
    GlideFile("octoml", openai_fake, {"OCTOML_API_KEY": "octo-glide-key"}, check_octoml),
    GlideFile("ollama", lambda: origin_fake(run_fake_ollama), {}, check_ollama),
]


def test_every_glide_provider_block_has_a_file() -> None:
    """The files cover every provider block of Glide 0.1.0's `LangModelConfig`."""
    glide_blocks = {"openai", "azureopenai", "cohere", "octoml", "anthropic", "bedrock", "ollama"}
    assert {f.provider for f in FILES} == glide_blocks
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == glide_blocks
    assert glide_blocks <= set(LanguageModelConfig.model_fields)


@pytest.mark.parametrize("glide", FILES, ids=[f.provider for f in FILES])
async def test_glide_config_loads_and_serves_a_chat(sluice: MakeClient, glide: GlideFile) -> None:
    """Loaded unchanged, served, and one Glide chat request answered by the fake."""
    async with glide.fake() as (fake, origin):
        config = load_config(
            CONFIGS / f"{glide.provider}.yaml", environ={**glide.env, "GLIDE_UPSTREAM": origin}
        )
        (router,) = config.routers.language
        (model,) = router.models
        assert model.provider_key == glide.provider
        client = await sluice(config)
        resp = await client.post(
            "/v1/language/default/chat", json={"message": {"role": "user", "content": "hi"}}
        )
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["router_id"] == "default"
        assert body["model_id"] == glide.provider
        assert body["model_response"]["message"] == {
            "role": "assistant",
            "content": "".join(fake.script.chunks),
        }
        glide.check(fake.stats)


def model_block(tmp_path: Path, block: str) -> LanguageModelConfig:
    """Load a one-model Glide config whose model has `block` (YAML, one line)."""
    path = tmp_path / "glide.yaml"
    path.write_text(
        f"routers:\n  language:\n    - id: r\n      models:\n        - id: m\n          {block}\n",
        encoding="utf-8",
    )
    (model,) = load_config(path, environ={}).routers.language[0].models
    return model


def test_cohere_block_with_only_chat_endpoint_loads(tmp_path: Path) -> None:
    """The issue's example: `cohere: {chat_endpoint: /chat}` (plus the key Glide requires)."""
    model = model_block(tmp_path, "cohere: {chat_endpoint: /chat, api_key: k}")
    block = model.cohere
    assert isinstance(block, CohereConfig)
    assert (block.base_url, block.chat_endpoint, block.api) == (
        "https://api.cohere.com/v2",
        "/chat",
        "v2",
    )


@pytest.mark.parametrize(
    ("block", "url", "api"),
    [
        ("{api_key: k}", "https://api.cohere.com/v2/chat", "v2"),
        ("{api_key: k, api: v1}", "https://api.cohere.com/v1/chat", "v1"),
        ("{api_key: k, base_url: 'http://h:1'}", "http://h:1/v2/chat", "v2"),
        ("{api_key: k, base_url: 'http://h:1/', api: v1}", "http://h:1/v1/chat", "v1"),
        (
            "{api_key: k, base_url: 'https://api.cohere.ai/v1'}",
            "https://api.cohere.ai/v1/chat",
            "v1",
        ),
        ("{api_key: k, default_params: {connectors: []}}", "https://api.cohere.com/v1/chat", "v1"),
    ],
)
def test_cohere_api_and_url_follow_the_block(
    tmp_path: Path, block: str, url: str, api: str
) -> None:
    """Without `api` the URL or a v1-only param picks v1; a bare origin gets `/{api}/chat`."""
    cohere = model_block(tmp_path, f"cohere: {block}").cohere
    assert cohere is not None
    assert (f"{cohere.base_url.rstrip('/')}{cohere.chat_endpoint}", cohere.api) == (url, api)


def test_cohere_v1_param_with_api_v2_names_the_param(tmp_path: Path) -> None:
    """`preamble` under `api: v2` would be a 400 from Cohere; the config says so instead."""
    with pytest.raises(ConfigError) as caught:
        model_block(tmp_path, "cohere: {api_key: k, api: v2, default_params: {preamble: x}}")
    (problem,) = caught.value.problems
    assert "preamble" in problem.message and "api: v1" in problem.message


@pytest.mark.parametrize(
    ("block", "endpoint"),
    [
        ("{api_key: k}", "https://api.anthropic.com/v1/messages"),
        ("{api_key: k, base_url: 'http://h:1'}", "http://h:1/v1/messages"),
        ("{api_key: k, base_url: 'http://h:1/v1'}", "http://h:1/v1/messages"),
        ("{api_key: k, base_url: 'http://h:1', chat_endpoint: /m}", "http://h:1/m"),
    ],
)
def test_anthropic_endpoint_follows_glide_and_bare_origins(
    tmp_path: Path, block: str, endpoint: str
) -> None:
    """Glide's `base_url` (ending in /v1) and a bare origin both reach `/v1/messages`."""
    anthropic = model_block(tmp_path, f"anthropic: {block}").anthropic
    assert anthropic is not None
    assert f"{anthropic.base_url}{anthropic.chat_endpoint}" == endpoint


def test_bedrock_glide_names_and_sluice_names_are_the_same_fields(tmp_path: Path) -> None:
    """Glide's `aws_region` / `access_key` / `secret_key` fill Sluice's fields."""
    glide = model_block(
        tmp_path, "bedrock: {aws_region: eu-west-3, access_key: A, secret_key: S, api_key: K}"
    ).bedrock
    ours = model_block(
        tmp_path, "bedrock: {region: eu-west-3, access_key_id: A, secret_access_key: S}"
    ).bedrock
    assert isinstance(glide, BedrockConfig) and isinstance(ours, BedrockConfig)
    assert glide.model_copy(update={"api_key": None}) == ours
    assert glide.api_key == SecretStr("K")
    assert glide.chat_endpoint == "/model"


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("openai: {api_key: k}", ("https://api.openai.com/v1", "/chat/completions", "gpt-4o")),
        (
            "octoml: {api_key: k}",
            (None, "/chat/completions", "mistral-7b-instruct-fp16"),
        ),
        ("ollama: {}", ("http://127.0.0.1:11434", "/api/chat", "llama3.2")),
    ],
)
def test_blocks_with_only_a_key_take_glides_defaults(
    tmp_path: Path, block: str, expected: tuple[str | None, str, str]
) -> None:
    """Glide's docs: for OpenAI and OctoML only an API key is needed; Ollama needs nothing."""
    fields = model_block(tmp_path, block).provider_config.model_dump()
    assert (fields["base_url"], fields["chat_endpoint"], fields["model"]) == expected
