"""`routers.agent[]` config: the routers an agent names must exist and serve the stage;
a config reload adds and removes agents for new conversations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import server
from config.loader import load_config
from config.models import SluiceConfig
from fakes.openai_server import run_fake_openai
from fakes.stt_servers import run_fake_transcription
from fakes.tts_servers import run_fake_openai_speech
from server import build_app
from serving.reload import CONFIG_SOURCE, RELOADER, ConfigSource
from tests.converse_helpers import (
    Conversation,
    chat_model,
    read_conversation,
    start_message,
    stt_model,
    tts_model,
)

BASE: dict[str, Any] = {
    "language": [{"id": "lm", "models": [{"id": "m", "local": {}}]}],
    "speech": [
        {"id": "talk", "speak": {"models": [{"id": "e", "local": {}}]}},
        {"id": "ears", "listen": {"models": [{"id": "p", "local": {}}]}},
    ],
}


def config(**agent: Any) -> SluiceConfig:
    body = {"id": "a", "listen": "ears", "chat": "lm", "speak": "talk", **agent}
    return SluiceConfig.model_validate({"routers": {**BASE, "agent": [body]}})


def test_a_valid_agent_is_served() -> None:
    parsed = config(turn={"max_history_messages": 4})
    assert [a.id for a in parsed.agent_routers] == ["a"]
    assert parsed.routers.agent[0].turn.max_history_messages == 4


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("chat", "nope", "chat names no language router 'nope'"),
        ("listen", "talk", "listen names no speech router with a listen section 'talk'"),
        ("speak", "ears", "speak names no speech router with a speak section 'ears'"),
    ],
)
def test_an_agent_naming_a_missing_router_is_refused(field: str, value: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(**{field: value})
    assert "routers.agent[0] ('a')" in str(caught.value) and words in str(caught.value)


def test_check_config_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sluice.yaml"
    path.write_text(
        "routers:\n"
        "  language: [{id: lm, models: [{id: m, local: {}}]}]\n"
        "  agent:\n"
        "    - {id: a, listen: ears, chat: lm, speak: talk}\n"
    )
    assert server.main(["check-config", str(path)]) != 0
    assert "listen names no speech router" in capsys.readouterr().err


def test_the_embedded_default_has_an_agent_on_local_engines() -> None:
    default = load_config(None)
    (agent,) = default.agent_routers
    assert (agent.id, agent.listen, agent.chat, agent.speak) == (
        "default",
        "default",
        "default",
        "default",
    )


async def test_a_reload_adds_and_removes_an_agent(aiohttp_client: Any, tmp_path: Path) -> None:
    """An agent added by a reload serves new conversations; once a reload removes it,
    a new conversation on an open socket is refused while the socket lives."""
    async with (
        run_fake_transcription() as stt,
        run_fake_openai() as chat,
        run_fake_openai_speech() as tts,
    ):
        routers: dict[str, Any] = {
            "language": [{"id": "lm", "models": [chat_model("chat", chat.url)]}],
            "speech": [
                {
                    "id": "sp",
                    "speak": {"models": [tts_model("tts", tts.url)]},
                    "listen": {"models": [stt_model("stt", stt.url)]},
                }
            ],
        }
        path = tmp_path / "sluice.json"
        path.write_text(json.dumps({"routers": routers}))
        app = build_app(load_config(path))
        app[CONFIG_SOURCE] = ConfigSource(str(path), "127.0.0.1")
        client = await aiohttp_client(app)
        assert (await client.get("/v1/agent/talk/converse")).status == 404
        agent = {"id": "talk", "listen": "sp", "chat": "lm", "speak": "sp"}
        path.write_text(json.dumps({"routers": {**routers, "agent": [agent]}}))
        assert client.app[RELOADER].reload().outcome == "applied"
        async with client.ws_connect("/v1/agent/talk/converse") as ws:
            await ws.send_str(start_message("c1"))
            await ws.send_str(json.dumps({"type": "text", "request_id": "c1", "text": "hi"}))
            await ws.send_str(json.dumps({"type": "end", "request_id": "c1"}))
            talk = await read_conversation(ws, Conversation(), "c1")
            assert talk.frames[-1]["type"] == "done"
            path.write_text(json.dumps({"routers": routers}))
            assert client.app[RELOADER].reload().outcome == "applied"
            await ws.send_str(start_message("c2"))
            refused = await read_conversation(ws, Conversation(), "c2")
        assert refused.frames[-1]["error"]["name"] == "router_not_found"
