"""A config file replaces the whole embedded default: start-up names the endpoints that
no router serves, so a config with only a chat router does not silently lose speech."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from config.coverage import endpoints_without_routers
from config.loader import load_config
from config.models import SluiceConfig
from server import build_app

CHAT_ONLY = {"routers": {"language": [{"id": "my-router", "models": [{"id": "l", "local": {}}]}]}}
SPEAK_ONLY = {"routers": {"speech": [{"id": "v", "speak": {"models": [{"id": "e", "local": {}}]}}]}}


@pytest.mark.parametrize(
    ("config", "missing"),
    [
        (CHAT_ONLY, ["speak", "listen", "embed", "converse"]),
        (SPEAK_ONLY, ["chat", "chatStream", "listen", "embed", "converse"]),
        ({}, ["chat", "chatStream", "speak", "listen", "embed", "converse"]),
    ],
)
def test_endpoints_without_routers(config: dict[str, Any], missing: list[str]) -> None:
    assert endpoints_without_routers(SluiceConfig.model_validate(config)) == missing


def test_the_embedded_default_serves_every_endpoint() -> None:
    assert endpoints_without_routers(load_config(None)) == []


async def test_start_up_warns_about_endpoints_without_routers(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sluice.server"):
        client = await aiohttp_client(build_app(SluiceConfig.model_validate(CHAT_ONLY)))
        response = await client.get("/v1/speech/")
        assert response.status == 200
    warnings = [r for r in caplog.records if r.getMessage().startswith("no router serves")]
    assert len(warnings) == 1
    assert warnings[0].__dict__["endpoints"] == ["speak", "listen", "embed", "converse"]
    assert warnings[0].__dict__["sections"] == [
        "routers.agent",
        "routers.embedding",
        "routers.speech[].listen",
        "routers.speech[].speak",
    ]
