"""The OpenAI-compatible routes behind the access policy: keys and router allowlists."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from config.models import SluiceConfig
from fakes.openai_server import FakeOpenAI
from security.keys import hash_key
from tests.conftest import make_config, openai_model
from tests.openai_sdk import MakeClient, openai_app_factory, sdk
from tests.ops_helpers import with_sections

GOOD = "sk-sluice-good-key-0123456789"
LIMITED = "sk-sluice-limited-key-0123456789"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def sluice(aiohttp_client: Any) -> MakeClient:
    return openai_app_factory(aiohttp_client)


def keyed(fake: FakeOpenAI) -> SluiceConfig:
    keys = [
        {"id": "good", "hash": hash_key(GOOD)},
        {"id": "limited", "hash": hash_key(LIMITED), "routers": ["other"]},
    ]
    return with_sections(make_config(openai_model("a", fake)), auth={"keys": keys})


async def test_without_keys_any_api_key_works_on_loopback(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with sdk(client, api_key="anything") as oai:
        completion = await oai.chat.completions.create(model="r", messages=USER)
    assert completion.choices[0].message.content == "Hello from fake"


async def test_missing_or_wrong_key_is_401(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(keyed(fake_a))
    async with sdk(client, api_key="sk-wrong") as oai:
        with pytest.raises(openai.AuthenticationError):
            await oai.chat.completions.create(model="r", messages=USER)
    for path in ("/v1/chat/completions", "/v1/audio/speech", "/v1/audio/transcriptions"):
        resp = await client.post(path, json={"model": "r", "messages": USER})
        assert resp.status == 401, path
    assert fake_a.stats.requests == 0


async def test_valid_key_works_and_router_allowlist_is_403(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    client = await sluice(keyed(fake_a))
    async with sdk(client, api_key=GOOD) as oai:
        completion = await oai.chat.completions.create(model="r", messages=USER)
    assert completion.model == "r/a"
    async with sdk(client, api_key=LIMITED) as oai:
        with pytest.raises(openai.PermissionDeniedError):
            await oai.chat.completions.create(model="r", messages=USER)
