"""The contract every chat adapter keeps, run against each vendor's fake server on 127.0.0.1.

One `Vendor` row says how to run the vendor's fake, how to build its adapter, and
how the vendor's faults are classified; every case below runs for every row:

- a fault before or during the stream ends it with a classified `ProviderError`
  (category, status, retryable, Retry-After) that names the model and leaks no key;
- a 429's own Retry-After reaches the error;
- the consumer stopping early (breaking out, cancelled while the vendor stalls
  before the first chunk or mid-stream) closes the upstream stream.

What only one vendor has (its wire format, roles, error events, signing) stays in
that vendor's `test_provider_<vendor>.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import pytest

from config.models import (
    AnthropicConfig,
    BedrockConfig,
    ClientConfig,
    CohereConfig,
    GeminiConfig,
    OllamaConfig,
    OpenAIConfig,
)
from fakes.anthropic_server import run_fake_anthropic
from fakes.bedrock_server import run_fake_bedrock
from fakes.cohere_server import run_fake_cohere
from fakes.common import RunningStreamFake
from fakes.gemini_server import run_fake_gemini
from fakes.ollama_server import run_fake_ollama
from fakes.openai_server import run_fake_openai
from providers.anthropic import AnthropicProvider
from providers.bedrock import BedrockProvider
from providers.cohere import CohereProvider
from providers.gemini import GeminiProvider
from providers.ollama import OllamaProvider
from providers.openai import OpenAIProvider
from providers.types import ChatDelta, ChatProvider, ErrorCategory
from tests.provider_helpers import PARAMS, collect, stream_error

Fake = RunningStreamFake[Any, Any]

OPENAI_KEY = "sk-test-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
GEMINI_KEY = "AIzaSy-test-0123456789abcdef"
COHERE_KEY = "co-test-0123456789abcdef"
AWS_ACCESS_KEY = "AKIDFAKEEXAMPLE12345"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY"
AWS_TOKEN = "FwoGZXIvYXdzEFAKESESSIONTOKEN"
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"

T = ErrorCategory.TRANSIENT
AUTH = ErrorCategory.AUTH
BAD = ErrorCategory.BAD_REQUEST
RATE = ErrorCategory.RATE_LIMITED
PROTO = ErrorCategory.PROTOCOL
EMPTY = ErrorCategory.EMPTY_OUTPUT

StreamFault = tuple[str, ErrorCategory, int | None, bool]
"""(fault, category, HTTP status, retryable) of a fault met while streaming."""


@dataclass(frozen=True)
class Vendor:
    """How to test one adapter: its fake, its construction and its fault table.

    `label` starts every error message; `secrets` must never appear in one;
    `retry_after_429` is what a streamed 429 from the fake's default script
    carries.
    """

    id: str
    serve: Callable[[], AbstractAsyncContextManager[Fake]]
    build: Callable[[Fake, aiohttp.ClientSession], ChatProvider]
    label: str
    secrets: tuple[str, ...]
    stream_faults: tuple[StreamFault, ...]
    retry_after_429: float | None = 1.0


@asynccontextmanager
async def signed_bedrock() -> AsyncIterator[Fake]:
    """The Bedrock fake, verifying signatures made with `AWS_SECRET`."""
    async with run_fake_bedrock() as fake:
        fake.script.secret_access_key = AWS_SECRET
        yield fake


def cohere(api: str) -> Callable[[Fake, aiohttp.ClientSession], ChatProvider]:
    """A builder of the Cohere adapter speaking chat API `api`."""

    def build(fake: Fake, session: aiohttp.ClientSession) -> ChatProvider:
        config = CohereConfig.model_validate(
            {"base_url": f"{fake.url}/", "api": api, "model": "command-test", "api_key": COHERE_KEY}
        )
        return CohereProvider(config, ClientConfig(), session)

    return build


COHERE_STREAM_FAULTS: tuple[StreamFault, ...] = (
    ("http_400", BAD, 400, False),
    ("http_401", AUTH, 401, True),
    ("http_498", AUTH, 498, True),
    ("http_429", RATE, 429, True),
    ("http_500", T, 500, True),
    ("truncated", PROTO, None, True),
    ("malformed", PROTO, None, True),
    ("error_event", T, None, True),
    ("empty", EMPTY, None, True),
)
VENDORS = (
    Vendor(
        id="openai",
        serve=run_fake_openai,
        build=lambda fake, session: OpenAIProvider(
            OpenAIConfig.model_validate(
                {"base_url": fake.url, "model": "gpt-test", "api_key": OPENAI_KEY}
            ),
            ClientConfig(),
            session,
        ),
        label="openai/gpt-test",
        secrets=(OPENAI_KEY,),
        stream_faults=(
            ("http_500", T, 500, True),
            ("http_401", AUTH, 401, True),
            ("http_400", BAD, 400, False),
            ("http_429", RATE, 429, True),
            ("refuse", T, None, True),
            ("truncated", PROTO, None, True),
            ("malformed", PROTO, None, True),
            ("empty", EMPTY, None, True),
        ),
    ),
    Vendor(
        id="anthropic",
        serve=run_fake_anthropic,
        build=lambda fake, session: AnthropicProvider(
            AnthropicConfig.model_validate(
                {"base_url": fake.url, "model": "claude-test", "api_key": ANTHROPIC_KEY}
            ),
            ClientConfig(),
            session,
        ),
        label="anthropic/claude-test",
        secrets=(ANTHROPIC_KEY,),
        stream_faults=(
            ("http_500", T, 500, True),
            ("http_529", T, 529, True),
            ("http_401", AUTH, 401, True),
            ("http_400", BAD, 400, False),
            ("http_429", RATE, 429, True),
            ("refuse", T, None, True),
            ("truncated", PROTO, None, True),
            ("malformed", PROTO, None, True),
            ("empty", EMPTY, None, True),
            ("error_event", T, None, True),
        ),
    ),
    Vendor(
        id="gemini",
        serve=run_fake_gemini,
        build=lambda fake, session: GeminiProvider(
            GeminiConfig.model_validate(
                {"base_url": fake.url, "model": "gemini-test", "api_key": GEMINI_KEY}
            ),
            ClientConfig(),
            session,
        ),
        label="gemini/gemini-test",
        secrets=(GEMINI_KEY,),
        stream_faults=(
            ("http_500", T, 500, True),
            ("http_503", T, 503, True),
            ("http_401", AUTH, 401, True),
            ("http_403", AUTH, 403, True),
            ("invalid_key", AUTH, 400, True),
            ("http_400", BAD, 400, False),
            ("http_429", RATE, 429, True),
            ("blocked_prompt", BAD, None, False),
            ("refuse", T, None, True),
            ("truncated", PROTO, None, True),
            ("malformed", PROTO, None, True),
            ("empty", EMPTY, None, True),
            ("error_event", T, None, True),
        ),
    ),
    Vendor(
        id="cohere-v2",
        serve=run_fake_cohere,
        build=cohere("v2"),
        label="cohere/command-test",
        secrets=(COHERE_KEY,),
        stream_faults=COHERE_STREAM_FAULTS,
    ),
    Vendor(
        id="cohere-v1",
        serve=run_fake_cohere,
        build=cohere("v1"),
        label="cohere/command-test",
        secrets=(COHERE_KEY,),
        stream_faults=COHERE_STREAM_FAULTS,
    ),
    Vendor(
        id="ollama",
        serve=run_fake_ollama,
        build=lambda fake, session: OllamaProvider(
            OllamaConfig(base_url=f"{fake.url}/", model="llama-test"), ClientConfig(), session
        ),
        label="ollama/llama-test",
        secrets=(),
        stream_faults=(
            ("http_400", BAD, 400, False),
            ("http_401", AUTH, 401, True),
            ("http_404", T, 404, True),
            ("http_429", RATE, 429, True),
            ("http_500", T, 500, True),
            ("truncated", PROTO, None, True),
            ("malformed", PROTO, None, True),
            ("error_event", T, None, True),
            ("empty", EMPTY, None, True),
        ),
    ),
    Vendor(
        id="bedrock",
        serve=signed_bedrock,
        build=lambda fake, session: BedrockProvider(
            BedrockConfig.model_validate(
                {
                    "base_url": f"{fake.url}/",
                    "region": "eu-west-3",
                    "model": BEDROCK_MODEL,
                    "access_key_id": AWS_ACCESS_KEY,
                    "secret_access_key": AWS_SECRET,
                    "session_token": AWS_TOKEN,
                }
            ),
            ClientConfig(),
            session,
        ),
        label=f"bedrock/{BEDROCK_MODEL}",
        secrets=(AWS_SECRET, AWS_TOKEN),
        stream_faults=(
            ("http_400", BAD, 400, False),
            ("http_403", AUTH, 403, True),
            ("http_404", T, 404, True),
            ("http_429", RATE, 429, True),
            ("http_500", T, 500, True),
            ("truncated", PROTO, None, True),
            ("malformed", PROTO, None, True),
            ("error_event", T, None, True),
            ("empty", EMPTY, None, True),
        ),
        retry_after_429=None,  # Bedrock sends no Retry-After unless told to
    ),
)

EACH_VENDOR = pytest.mark.parametrize("vendor", VENDORS, ids=[v.id for v in VENDORS])


@pytest.fixture
async def fake(vendor: Vendor) -> AsyncIterator[Fake]:
    """The running fake of the test's vendor."""
    async with vendor.serve() as server:
        yield server


@pytest.fixture
def provider(vendor: Vendor, fake: Fake, session: aiohttp.ClientSession) -> ChatProvider:
    """The test's vendor's adapter, pointed at its fake."""
    return vendor.build(fake, session)


def stream_fault_cases() -> pytest.MarkDecorator:
    """One case per vendor and row of its `stream_faults`."""
    cases = [
        pytest.param(v, *row, id=f"{v.id}-{row[0]}") for v in VENDORS for row in v.stream_faults
    ]
    return pytest.mark.parametrize(("vendor", "fault", "category", "status", "retryable"), cases)


# --- faults ----------------------------------------------------------------------------


@stream_fault_cases()
async def test_stream_faults_are_classified(
    vendor: Vendor,
    fake: Fake,
    provider: ChatProvider,
    fault: str,
    category: ErrorCategory,
    status: int | None,
    retryable: bool,
) -> None:
    """A fault ends the stream with its category, status, retryability and Retry-After."""
    fake.script.fault = fault
    error, _ = await stream_error(provider)
    assert error.category is category
    assert error.status == status
    assert error.retryable is retryable
    assert error.retry_after == (vendor.retry_after_429 if fault == "http_429" else None)
    assert error.message.startswith(f"{vendor.label}: ")
    for secret in vendor.secrets:
        assert secret not in str(error)


@EACH_VENDOR
async def test_rate_limit_carries_its_own_retry_after(fake: Fake, provider: ChatProvider) -> None:
    """A 429's Retry-After (seconds) reaches the error the stream raises."""
    fake.script.fault = "http_429"
    fake.script.retry_after = "17"
    error, _ = await stream_error(provider)
    assert error.category is ErrorCategory.RATE_LIMITED
    assert error.retry_after == 17.0


# --- the consumer stops early ------------------------------------------------------------


@EACH_VENDOR
async def test_breaking_out_closes_the_upstream_stream(fake: Fake, provider: ChatProvider) -> None:
    """Leaving the stream after the first delta closes the vendor's response."""
    fake.script.chunks = [f"t{i}" for i in range(50)]
    fake.script.delay = 0.005
    stream = cast("AsyncGenerator[ChatDelta, None]", provider.stream(PARAMS))
    async with aclosing(stream) as deltas:
        async for delta in deltas:
            assert delta.content == "t0"
            break
    await fake.wait_stream_closed(1.0)
    assert fake.stats.streams_completed == 0


@EACH_VENDOR
async def test_cancelling_a_stalled_consumer_closes_the_upstream_stream(
    fake: Fake, provider: ChatProvider
) -> None:
    """Cancelled while the vendor stalls before its first chunk: the request is closed."""
    fake.script.fault = "stall_before_first"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await collect(provider)
    await fake.wait_stream_closed(1.0)
    await fake.stats.wait_idle(1.0)


@EACH_VENDOR
async def test_cancelling_mid_stream_closes_the_upstream_stream(
    fake: Fake, provider: ChatProvider
) -> None:
    """Cancelled while the vendor stalls mid-stream: the response is closed."""
    fake.script.fault = "stall_mid_stream"
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(PARAMS):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.wait_stream_closed(1.0)
