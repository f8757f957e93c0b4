"""`routers.embedding[]` validation: one vector space per router unless the operator
says the models are interchangeable; problems name the file line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_config

HEAD = """\
routers:
  embedding:
    - id: docs
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sluice.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_models_of_different_spaces_are_rejected_with_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
      models:
        - id: small
          openai: {model: text-embedding-3-small, api_key: sk-a}
        - id: cohere
          cohere: {model: embed-english-v3.0, api_key: co-a}
""",
    )
    [problem] = problems(path)
    assert problem.startswith(f"{path}:3:")
    assert "routers.embedding[0]" in problem
    assert "text-embedding-3-small" in problem and "embed-english-v3.0" in problem
    assert "interchangeable" in problem


def test_models_of_different_dimensions_are_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
      models:
        - id: a
          dimensions: 256
          openai: {model: text-embedding-3-small, api_key: sk-a}
        - id: b
          openai: {model: text-embedding-3-small, api_key: sk-b}
""",
    )
    [problem] = problems(path)
    assert "a: 256" in problem and "b: vendor default" in problem


def test_same_space_across_vendors_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
      models:
        - id: openai
          dimensions: 1536
          openai: {model: text-embedding-3-small, api_key: sk-a}
        - id: azure
          dimensions: 1536
          space: text-embedding-3-small
          azureopenai: {base_url: "https://x.openai.azure.com", model: my-deploy, api_key: az}
""",
    )
    router = load_config(path).embedding_routers[0]
    assert [m.vector_space for m in router.models] == ["text-embedding-3-small"] * 2


def test_interchangeable_allows_mixing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
      interchangeable: true
      models:
        - id: small
          openai: {model: text-embedding-3-small, api_key: sk-a}
        - id: local
          local: {}
""",
    )
    assert load_config(path).embedding_routers[0].interchangeable


def test_disabled_models_do_not_count_and_blocks_are_strict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
      models:
        - id: small
          openai: {model: text-embedding-3-small, api_key: sk-a}
        - id: spare
          enabled: false
          gemini: {api_key: g}
""",
    )
    assert len(load_config(path).embedding_routers[0].enabled_models) == 1
    bad = write(
        tmp_path,
        """\
      models:
        - id: small
          openai: {model: text-embedding-3-small, api_key: sk-a, chat_endpoint: /x}
""",
    )
    [problem] = problems(bad)
    assert "routers.embedding[0].models[0].openai.chat_endpoint" in problem


def test_duplicate_router_ids_are_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
      models: [{id: a, ollama: {}}]
    - id: docs
      models: [{id: a, ollama: {}}]
""",
    )
    [problem] = problems(path)
    assert "duplicate embedding router id 'docs'" in problem


def test_the_local_engine_without_its_extra_is_refused_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, "      models: [{id: here, local: {}}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, installed=lambda name: False)
    assert any(
        p.path == "routers.embedding[0].models[0].local" and "local" in p.message
        for p in info.value.problems
    )
