"""Tests of the YAML config loader: substitution, line-numbered errors, secrets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from config import ConfigError, SluiceConfig, check_config, load_config
from config.loader import Problem, format_path, parse_config

GLIDE_CONFIG = """\
server:
  host: 0.0.0.0
  port: 9098
routers:
  language:
    - id: myrouter
      strategy: priority
      retry:
        max_retries: 2
        min_delay: 500ms
        max_delay: 1m30s
      models:
        - id: openai-primary
          enabled: true
          weight: 2
          error_budget: "10/m"
          latency:
            decay: 0.1
            warmup_samples: 5
            update_interval: 30s
          client:
            timeout: 2m
            first_chunk_timeout: 1500ms
          openai:
            base_url: https://api.openai.com/v1
            model: gpt-4o-mini
            api_key: ${env:TEST_OPENAI_KEY}
            default_params:
              temperature: 0.7
              max_tokens: 256
        - id: openai-backup
          enabled: false
          error_budget: 5/s
          openai:
            base_url: http://127.0.0.1:8000/v1
            model: llama3
            api_key: ${file:secrets/backup.key}
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return info.value.problems


def only(path: Path, environ: dict[str, str] | None = None) -> Problem:
    found = problems(path, environ)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def model_yaml(provider_block: str) -> str:
    """A one-router, one-model config whose model has the given (indented) block."""
    return "routers:\n  language:\n    - id: r\n      models:\n        - id: m\n" + textwrap.indent(
        textwrap.dedent(provider_block), " " * 10
    )


# --- valid configs ------------------------------------------------------------------


def test_glide_style_config_loads(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "backup.key").write_text("backup-key\n", encoding="utf-8")
    config = load_config(write(tmp_path, GLIDE_CONFIG), environ={"TEST_OPENAI_KEY": "sk-primary"})

    assert isinstance(config, SluiceConfig)
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9098)
    router = config.routers.language[0]
    assert router.id == "myrouter"
    assert router.strategy == "priority"
    assert (router.retry.max_retries, router.retry.min_delay, router.retry.max_delay) == (
        2,
        0.5,
        90.0,
    )
    primary, backup = router.models
    assert primary.enabled and primary.weight == 2.0
    assert (primary.error_budget.budget, primary.error_budget.unit_seconds) == (10, 60.0)
    assert (primary.latency.decay, primary.latency.warmup_samples) == (0.1, 5)
    assert primary.latency.update_interval == 30.0
    assert (primary.client.timeout, primary.client.first_chunk_timeout) == (120.0, 1.5)
    assert primary.provider_key == "openai"
    assert primary.openai is not None
    assert primary.openai.model == "gpt-4o-mini"
    assert primary.openai.api_key is not None
    assert primary.openai.api_key.get_secret_value() == "sk-primary"
    assert primary.openai.default_params == {"temperature": 0.7, "max_tokens": 256}

    assert not backup.enabled
    assert (backup.error_budget.budget, backup.error_budget.unit_seconds) == (5, 1.0)
    assert backup.openai is not None and backup.openai.api_key is not None
    assert backup.openai.api_key.get_secret_value() == "backup-key"
    assert router.enabled_models == [primary]
    assert check_config(tmp_path / "config.yaml", environ={"TEST_OPENAI_KEY": "k"}) == []


def test_embedded_default_loads() -> None:
    config = load_config(None)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9099)
    assert [r.id for r in config.routers.language] == ["default"]
    router = config.routers.language[0]
    assert router.strategy == "priority"
    assert [(m.id, m.provider_key) for m in router.models] == [("local-smollm2", "local")]
    assert [r.id for r in config.language_routers] == ["default"]
    assert check_config(None) == []


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.server.port == 9099
    assert config.routers.language == []


def test_date_like_string_stays_a_string(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        model_yaml(
            """\
            azureopenai:
              base_url: https://x.openai.azure.com
              model: gpt4
              api_version: 2024-06-01
              api_key: k
            """
        ),
    )
    model = load_config(path).routers.language[0].models[0]
    assert model.azureopenai is not None
    assert model.azureopenai.api_version == "2024-06-01"


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        routers:
          language:
            - id: r
              models:
                - id: a
                  client: &fast {timeout: 5s, first_chunk_timeout: 1s}
                  local: {}
                - id: b
                  client:
                    <<: *fast
                    timeout: 9s
                  local: {}
        """,
    )
    a, b = load_config(path).routers.language[0].models
    assert (a.client.timeout, a.client.first_chunk_timeout) == (5.0, 1.0)
    assert (b.client.timeout, b.client.first_chunk_timeout) == (9.0, 1.0)


# --- substitution -------------------------------------------------------------------

NASTY_SECRET = "sk-$a${b}$${c} 'q' \"dq\": {x: [1]} # not a comment\\n"


def openai_with_key(key_yaml: str) -> str:
    return model_yaml(f"openai:\n  model: gpt\n  api_key: {key_yaml}\n")


def api_key_of(config: SluiceConfig) -> str:
    block = config.routers.language[0].models[0].openai
    assert block is not None and block.api_key is not None
    return block.api_key.get_secret_value()


def test_env_secret_with_yaml_syntax_stays_byte_identical(tmp_path: Path) -> None:
    path = write(tmp_path, openai_with_key("${env:NASTY}"))
    config = load_config(path, environ={"NASTY": NASTY_SECRET})
    assert api_key_of(config) == NASTY_SECRET


def test_file_secret_relative_to_config_dir_strips_one_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "key.txt").write_text(NASTY_SECRET + "\n", encoding="utf-8")
    path = write(conf_dir, openai_with_key('"${file:key.txt}"'))
    monkeypatch.chdir(tmp_path)  # a cwd-relative lookup would miss the file
    assert api_key_of(load_config(path)) == NASTY_SECRET


def test_file_substitution_with_absolute_path(tmp_path: Path) -> None:
    key_file = tmp_path / "abs.key"
    key_file.write_bytes(b"abs-secret\n")
    path = write(tmp_path / "..", openai_with_key(f"${{file:{key_file}}}"), name="abs.yaml")
    assert api_key_of(load_config(path)) == "abs-secret"


def test_substitution_inside_a_longer_string_and_into_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        server:
          host: ${env:HOST}
          port: ${env:PORT}
        routers:
          language:
            - id: r
              models:
                - id: m
                  openai:
                    base_url: "http://${env:HOST}:${env:PORT}/v1"
                    model: gpt
        """,
    )
    config = load_config(path, environ={"HOST": "10.0.0.1", "PORT": "8081"})
    assert (config.server.host, config.server.port) == ("10.0.0.1", 8081)
    block = config.routers.language[0].models[0].openai
    assert block is not None and block.base_url == "http://10.0.0.1:8081/v1"


def test_double_dollar_escapes_a_literal(tmp_path: Path) -> None:
    path = write(tmp_path, openai_with_key("'pre$${env:NOT_READ}post $x $$y'"))
    assert api_key_of(load_config(path, environ={})) == "pre${env:NOT_READ}post $x $$y"


def test_missing_env_var_names_variable_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, openai_with_key("${env:MISSING_KEY}"))
    problem = only(path)
    assert "MISSING_KEY" in problem.message
    assert problem.line == 8
    assert problem.path == "routers.language[0].models[0].openai.api_key"
    assert str(problem).startswith(f"{path}:8:")


def test_missing_file_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, openai_with_key("${file:nowhere.key}"))
    problem = only(path)
    assert "nowhere.key" in problem.message
    assert problem.line == 8


def test_unknown_and_unterminated_substitutions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        server:
          host: ${vault:x}
          log_level: ${env:LEVEL
        """,
    )
    first, second = problems(path)
    assert (first.line, first.path) == (2, "server.host")
    assert "unknown substitution" in first.message
    assert (second.line, second.path) == (3, "server.log_level")
    assert "unterminated" in second.message


# --- errors with lines --------------------------------------------------------------


def test_unknown_key_reported_with_its_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        model_yaml(
            """\
            openai:
              model: gpt
              bas_url: http://x
            """
        ),
    )
    problem = only(path)
    assert (problem.line, problem.column) == (8, 13)
    assert problem.path == "routers.language[0].models[0].openai.bas_url"
    assert problem.message.startswith("unknown key")
    assert "base_url" in problem.message  # the suggestion
    assert str(problem) == (
        f"{path}:8:13: routers.language[0].models[0].openai.bas_url: "
        "unknown key (did you mean 'base_url'?)"
    )


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 1\nsevrer:\n  port: 2\n")
    problem = only(path)
    assert (problem.line, problem.column, problem.path) == (3, 1, "sevrer")


def test_wrong_type_reported_at_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  host: h\n  port: lots\n")
    problem = only(path)
    assert (problem.line, problem.column, problem.path) == (3, 9, "server.port")
    assert "integer" in problem.message
    assert "lots" not in str(problem)  # inputs are never echoed


def test_bad_duration_and_error_budget(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        model_yaml(
            """\
            error_budget: ten per minute
            client:
              timeout: 2 minutes
            local: {}
            """
        ),
    )
    budget, timeout = problems(path)
    assert (budget.line, budget.path) == (6, "routers.language[0].models[0].error_budget")
    assert "error budget" in budget.message
    assert (timeout.line, timeout.path) == (8, "routers.language[0].models[0].client.timeout")
    assert "duration" in timeout.message


def test_two_provider_blocks_in_one_model(tmp_path: Path) -> None:
    path = write(tmp_path, model_yaml("local: {}\nopenai:\n  model: gpt\n"))
    problem = only(path)
    assert problem.path == "routers.language[0].models[0]"
    assert problem.line == 5
    assert "exactly one provider block" in problem.message


def test_zero_provider_blocks(tmp_path: Path) -> None:
    path = write(tmp_path, model_yaml("enabled: true\n"))
    problem = only(path)
    assert (problem.line, problem.path) == (5, "routers.language[0].models[0]")
    assert "found none" in problem.message


def test_missing_required_field_points_at_enclosing_block(tmp_path: Path) -> None:
    path = write(tmp_path, model_yaml("azureopenai:\n  model: gpt\n  api_key: k\n"))
    problem = only(path)
    assert problem.path == "routers.language[0].models[0].azureopenai.base_url"
    assert problem.line == 6  # the `azureopenai:` line
    assert problem.message == "required field is missing"


def test_duplicate_router_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        routers:
          language:
            - id: same
              models: [{id: m, local: {}}]
            - id: same
              models: [{id: m, local: {}}]
        """,
    )
    problem = only(path)
    assert (problem.line, problem.path) == (2, "routers.language")
    assert "duplicate router id 'same'" in problem.message


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 1\n  port: 2\n")
    problem = only(path)
    assert (problem.line, problem.path) == (3, "server.port")
    assert "duplicate key (first at line 2)" in problem.message


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  host: [unclosed\n  port: 1\nlimits: {\n")
    problem = only(path)
    assert problem.line is not None and problem.line >= 2
    assert problem.column is not None
    assert "YAML syntax error" in problem.message
    assert str(problem).startswith(f"{path}:{problem.line}:{problem.column}: ")


def test_tab_indentation_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text("server:\n\tport: 1\n", encoding="utf-8")
    problem = only(path)
    assert problem.line == 2


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    problem = only(write(tmp_path, "- a\n- b\n"))
    assert problem.line == 1
    assert "mapping" in problem.message


def test_unreadable_file(tmp_path: Path) -> None:
    problem = only(tmp_path / "absent.yaml")
    assert problem.line is None
    assert "cannot read" in str(problem)


def test_many_problems_are_all_reported_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        routers:
          language:
            - id: r
              strategy: fastest
              models:
                - id: m
                  local: {n_threads: 0}
        server:
          port: 70000
        """,
    )
    found = problems(path)
    assert [(p.line, p.path) for p in found] == [
        (4, "routers.language[0].strategy"),
        (7, "routers.language[0].models[0].local.n_threads"),
        (9, "server.port"),
    ]
    text = str(ConfigError(found))
    assert text.count("\n") == 2
    assert check_config(path) == text.splitlines()


# --- secrets never leak -------------------------------------------------------------

SECRET = "sk-live-TOPSECRET-0123456789"


def assert_no_secret(path: Path, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    for text in (str(info.value), repr(info.value), *map(repr, info.value.problems)):
        assert SECRET not in text
        assert "TOPSECRET" not in text
    return info.value.problems


def test_secret_as_mapping_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, openai_with_key(f"{{{SECRET}: {SECRET}}}"))
    (problem,) = assert_no_secret(path)
    assert problem.path == "routers.language[0].models[0].openai.api_key"


def test_secret_as_list_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, openai_with_key(f"[{SECRET}]"))
    assert_no_secret(path)


def test_valid_secret_in_a_failing_model_is_not_echoed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        model_yaml(
            f"""\
            weight: -1
            error_budget: nope
            azureopenai:
              model: gpt
              api_key: {SECRET}
              bogus: 1
            local: {{}}
            """
        ),
    )
    assert len(assert_no_secret(path)) == 4


def test_substituted_value_misused_elsewhere_is_masked(tmp_path: Path) -> None:
    # The secret lands in a field whose validator quotes its input: masked anyway.
    path = write(tmp_path, model_yaml("error_budget: ${env:KEY}\nlocal: {}\n"))
    (problem,) = assert_no_secret(path, {"KEY": SECRET})
    assert "***" in problem.message


def test_secret_in_unknown_substitution_is_masked(tmp_path: Path) -> None:
    path = write(tmp_path, openai_with_key(f"'${{{SECRET}}}'"))
    assert_no_secret(path)


# --- helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (
            ("routers", "language", 0, "models", 1, "openai", "api_key"),
            "routers.language[0].models[1].openai.api_key",
        ),
        (("default_params", "a.b"), 'default_params["a.b"]'),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


def test_parse_config_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("server: {port: x}\n", source="inline")
    assert str(info.value).startswith("inline:1:16: server.port: ")
