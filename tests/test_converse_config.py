"""`routers.agent[]` config: the routers an agent names must exist and serve the stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import server
from config.loader import load_config
from config.models import SluiceConfig

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
