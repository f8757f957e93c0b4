"""Every example in README.md and docs/ works as written (see `tests/doc_examples.py`
for the markers and how blocks are run): shell and Python against a real `sluice
serve` on loopback, configs through `sluice check-config`, Docker and Kubernetes
commands through stand-ins that check what can be checked without them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import server
from tests.doc_examples import (
    PAGES,
    ROOT,
    DocServer,
    Example,
    all_examples,
    config_text,
    environment,
    mirror,
    run,
    save_configs,
    serve,
    stand_in_environ,
    unmarked,
)

EXAMPLES = all_examples()


def of_kind(*kinds: str) -> list[Any]:
    """The examples marked with one of `kinds`, as parameters named by page and line."""
    return [pytest.param(e, id=e.name) for e in EXAMPLES if e.kind in kinds]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One working directory per page (named configs of the page saved in it)."""
    root = tmp_path_factory.mktemp("doc-examples")
    for page in PAGES:
        directory = mirror(root / page.stem)
        save_configs([e for e in EXAMPLES if e.page == page], directory)
    return root


@pytest.fixture(scope="module")
def doc_server(workspace: Path) -> Iterator[DocServer]:
    with serve(workspace) as running:
        yield running


def test_every_runnable_block_is_marked() -> None:
    assert unmarked(EXAMPLES) == []
    assert of_kind("run") and of_kind("config")


@pytest.mark.parametrize("example", of_kind("run"))
def test_example_runs(example: Example, doc_server: DocServer, workspace: Path) -> None:
    done = run(example, doc_server.port, workspace / example.page.stem)
    assert done.returncode == 0, (
        f"{example.name} failed ({done.returncode}):\n{example.code}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )


@pytest.mark.parametrize("example", of_kind("config", "config-models"))
def test_config_example_passes_check_config(
    example: Example,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = config_text(example)
    for name, value in stand_in_environ(text).items():
        monkeypatch.setenv(name, value)
    path = tmp_path / (example.arg or "sluice.yaml")
    path.write_text(text)
    status = server.main(["check-config", str(path)])
    assert status == 0, f"{example.name}:\n{capsys.readouterr().err}"


@pytest.mark.parametrize("example", of_kind("fragment"))
def test_fragment_parses(example: Example) -> None:
    if example.language in ("yaml", "yml"):
        assert yaml.safe_load(example.code) is not None
    elif example.language == "json":
        json.loads(example.code)
    elif example.language in ("python", "py"):
        compile(example.code, example.name, "exec")  # e.g. no top-level `async with`
    else:
        pytest.fail(f"{example.name}: no fragment check for {example.language}")


def test_metric_names_in_the_docs_are_the_exposed_ones(doc_server: DocServer) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{doc_server.port}/metrics") as response:
        exposition = response.read().decode()
    exposed = set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))
    for page in PAGES:
        for name in set(re.findall(r"\bsluice_[a-z_]+[a-z]\b", page.read_text())):
            if name == "sluice_client":  # the Python client's import name, not a metric
                continue
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in exposed or family in exposed, f"{page.name}: {name} is not exposed"


# ---- the stand-ins can fail: what the quick starts did before they were fixed ----------


def stand_in(directory: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "doc_tools.py"), *argv],
        cwd=directory,
        env=environment(directory),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )


def test_docker_stand_in_refuses_a_container_that_would_exit(tmp_path: Path) -> None:
    mirror(tmp_path)
    # the image's own config needs a client key hash; without one the container exits 2
    done = stand_in(tmp_path, "docker", "run", "--rm", "-p", "9099:9099", "sluice:0.1.0")
    assert done.returncode == 2 and "SLUICE_CLIENT_KEY_HASH" in done.stderr, done.stderr
    # a keyless config served on 0.0.0.0 is refused
    (tmp_path / "sluice.yaml").write_text("routers:\n  language: []\n")
    mount = f"{tmp_path / 'sluice.yaml'}:/etc/sluice/sluice.yaml:ro"
    done = stand_in(
        tmp_path, "docker", "run", "-p", "9099:9099", "-v", mount, "sluice:0.1.0",
        "serve", "--host", "0.0.0.0", "--config", "/etc/sluice/sluice.yaml",
    )  # fmt: skip
    assert done.returncode == 2 and "without client API keys" in done.stderr, done.stderr
    done = stand_in(tmp_path, "docker", "run", "sluice:0.1.0", "serve", "--no-such-flag")
    assert done.returncode == 2 and "--no-such-flag" in done.stderr
    key_hash = stand_in(tmp_path, "docker", "run", "-i", "sluice:0.1.0", "hash-key", stdin="k\n")
    assert key_hash.returncode == 0 and key_hash.stdout.startswith("sha256:")
    done = stand_in(
        tmp_path, "docker", "run", "-d", "-p", "9099:9099",
        "-e", f"SLUICE_CLIENT_KEY_HASH={key_hash.stdout.strip()}", "sluice:0.1.0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_kubectl_stand_in_refuses_a_secret_that_lacks_what_the_config_reads(
    tmp_path: Path,
) -> None:
    mirror(tmp_path)
    done = stand_in(tmp_path, "kubectl", "apply", "-k", "deploy/k8s")
    assert done.returncode == 1 and "create it first" in done.stderr, done.stderr
    secret = ["kubectl", "-n", "sluice", "create", "secret", "generic", "sluice-provider-keys"]
    stand_in(tmp_path, *secret, "--from-literal=OPENAI_API_KEY=sk-x")
    done = stand_in(tmp_path, "kubectl", "-n", "sluice", "apply", "-k", "deploy/k8s")
    assert done.returncode == 1 and "SLUICE_CLIENT_KEY_HASH" in done.stderr, done.stderr
    stand_in(
        tmp_path, *secret, "--from-literal=OPENAI_API_KEY=sk-x",
        "--from-literal=SLUICE_CLIENT_KEY_HASH=sha256:" + "0" * 64,
    )  # fmt: skip
    assert stand_in(tmp_path, "kubectl", "apply", "-k", "deploy/k8s").returncode == 0
