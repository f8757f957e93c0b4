"""The embedded chat engine is the `local` extra: a config naming it without the
extra installed is refused at load with one line naming the extra; other providers
load without it. (tests/test_packaging.py checks the same in a real install.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, check_config, load_config
from config.extras import MISSING_LOCAL_ENGINE


def nothing(name: str) -> bool:
    return False


def only_llama(name: str) -> bool:
    return name == "llama_cpp"


def test_the_embedded_default_without_the_extra_fails_with_one_line_per_engine() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, installed=nothing)
    lines = str(refused.value).splitlines()
    assert len(lines) == 2
    assert "routers.language[0].models[0].local: the local chat engine" in lines[0]
    assert "routers.embedding[0].models[0].local: the local embedding engine" in lines[1]
    assert all("pip install 'sluice-gateway[local]'" in line for line in lines)


def test_check_config_names_file_line_and_the_extra(tmp_path: Path) -> None:
    path = tmp_path / "local.yaml"
    path.write_text(
        "routers:\n  language:\n    - id: r\n      models:\n"
        "        - id: cloud\n          openai: {api_key: sk-x}\n"
        "        - id: here\n          local: {}\n"
    )
    assert check_config(path, installed=nothing) == [
        f"{path}:8:11: routers.language[0].models[1].local: {MISSING_LOCAL_ENGINE}"
    ]
    assert check_config(path, installed=lambda name: True) == []


def test_other_providers_and_disabled_local_models_need_no_extra(tmp_path: Path) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_text(
        "routers:\n  language:\n    - id: r\n      models:\n"
        "        - id: cloud\n          openai: {api_key: sk-x}\n"
        "        - id: idle\n          enabled: false\n          local: {}\n"
        "    - id: later\n      enabled: false\n      models:\n"
        "        - id: here\n          local: {}\n"
    )
    assert check_config(path, installed=nothing) == []


def test_a_model_path_needs_llama_but_not_the_bundled_model(tmp_path: Path) -> None:
    own = tmp_path / "own.yaml"
    own.write_text(
        "routers:\n  language:\n    - id: r\n      models:\n"
        "        - id: mine\n          local: {model_path: /models/x.gguf}\n"
    )
    bundled = tmp_path / "bundled.yaml"
    bundled.write_text(
        "routers:\n  language:\n    - id: r\n      models:\n        - id: s\n          local: {}\n"
    )
    assert check_config(own, installed=only_llama) == []
    assert len(check_config(bundled, installed=only_llama)) == 1
    assert len(check_config(own, installed=nothing)) == 1
