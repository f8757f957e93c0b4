"""The code blocks of README.md and docs/*.md, extracted and run the way a reader would.

A block is marked by an HTML comment on the line before its opening fence (GitHub
does not render it):

    <!-- doc-test: run -->              sh/bash: run in bash; python: run as a script
    <!-- doc-test: config [NAME] -->    yaml: a whole config, validated by check-config
                                        (saved as NAME for later blocks of the page)
    <!-- doc-test: config-models -->    yaml: a `models:` list, checked inside a router
    <!-- doc-test: fragment -->         yaml/json: must parse; python: must compile
    <!-- doc-test: skip REASON -->      not run; the reason is required

Every sh, bash, python, yaml and json block must carry one (`unmarked` lists those
that do not), so a new example cannot slip in untested. Blocks of a page run in
order in one working directory of their own (which links to the repository's files,
as a fresh clone would have them), against one real server on loopback:

- `localhost:9099` / `127.0.0.1:9099` become the test server's address;
  `.venv/bin/sluice` becomes this interpreter's `sluice`; the virtualenv's bin
  directory is not on the PATH (a bare `sluice` fails, as it does after
  `make serve`);
- `docker` and `kubectl` are the stand-ins of `tests/doc_tools.py`; vendor keys
  (`OPENAI_API_KEY`, ...) are stand-in values;
- shell blocks run under `set -eo pipefail`, with curl failing on HTTP errors,
  and a page's shell blocks share their exported variables (one terminal);
  Python runs with warnings as errors.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES: tuple[Path, ...] = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
CHECKED_LANGUAGES = frozenset({"sh", "bash", "shell", "python", "py", "yaml", "yml", "json"})
KINDS = frozenset({"run", "config", "config-models", "fragment", "skip"})
BIN = Path(sys.executable).parent
SLUICE = BIN / "sluice"
STAND_IN_KEYS: Mapping[str, str] = {
    name: "doc-test-stand-in-key"
    for name in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "COHERE_API_KEY",
        "MISTRAL_API_KEY",
        "GROQ_API_KEY",
        "AZURE_OPENAI_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "ELEVEN_API_KEY",
        "DEEPGRAM_API_KEY",
    )
}
TIMEOUT = 50.0

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<kind>[a-z-]+)(?:\s+(?P<arg>.*?))?\s*-->\s*$")
_ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):9099\b")


@dataclass(frozen=True, slots=True)
class Example:
    """One fenced block: where it is, its language, its marker (kind and argument)."""

    page: Path
    line: int
    language: str
    kind: str | None
    arg: str
    code: str

    @property
    def name(self) -> str:
        """`README.md:46` (for test ids and messages)."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def checked(self) -> bool:
        """Whether its language is one whose blocks must be marked."""
        return self.language in CHECKED_LANGUAGES


def extract(page: Path) -> list[Example]:
    """A Markdown page in; its fenced blocks out, each with the marker before it."""
    lines = page.read_text().splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        end = i + 1
        while end < len(lines) and not re.match(rf"^ *{fence}\s*$", lines[end]):
            end += 1
        body = textwrap.dedent("\n".join(line[indent:] for line in lines[i + 1 : end]))
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = _MARKER.match(lines[before]) if before >= 0 else None
        found.append(
            Example(
                page,
                i + 1,
                opening["lang"].lower(),
                marker["kind"] if marker else None,
                (marker["arg"] or "") if marker else "",
                body + "\n",
            )
        )
        i = end + 1
    return found


def all_examples() -> list[Example]:
    """Every fenced block of README.md and docs/*.md, page by page, in order."""
    return [example for page in PAGES for example in extract(page)]


def unmarked(examples: list[Example]) -> list[str]:
    """Blocks that must be marked but are not, or carry an unknown or bare marker."""
    problems = []
    for example in examples:
        if example.kind is None:
            if example.checked:
                problems.append(f"{example.name}: a {example.language} block without a marker")
        elif example.kind not in KINDS:
            problems.append(f"{example.name}: unknown marker {example.kind!r}")
        elif example.kind == "skip" and not example.arg:
            problems.append(f"{example.name}: `skip` needs a reason")
    return problems


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class DocServer:
    """The running `sluice serve` the examples talk to."""

    port: int
    log: Path


@contextmanager
def serve(directory: Path) -> Iterator[DocServer]:
    """`sluice serve --port P` on the embedded default config (what `make serve`
    runs), until the block exits; its log goes to `directory/sluice.log`."""
    port = free_port()
    log = directory / "sluice.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [SLUICE, "serve", "--port", str(port)], cwd=directory, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health/", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sluice did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield DocServer(port, log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def mirror(directory: Path) -> Path:
    """`directory` (created if needed) made to look like a fresh clone: a symlink to
    each top-level entry of the repository (not the dot files), so relative paths in
    examples resolve as they would for a reader, while files they write stay here."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in ROOT.iterdir():
        link = directory / entry.name
        if not entry.name.startswith(".") and not link.exists():
            link.symlink_to(entry)
    return directory


def tools_dir(directory: Path) -> Path:
    """A bin directory holding the `docker` and `kubectl` stand-ins."""
    tools = directory / "doc-tools"
    tools.mkdir(exist_ok=True)
    for tool in ("docker", "kubectl"):
        script = tools / tool
        script.write_text(
            f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
            f'{shlex.quote(str(ROOT / "tests" / "doc_tools.py"))} {tool} "$@"\n'
        )
        script.chmod(0o755)
    return tools


def environment(directory: Path) -> dict[str, str]:
    """The examples' environment: no virtualenv on the PATH, the stand-in tools first,
    stand-in vendor keys."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(STAND_IN_KEYS)
    env["PATH"] = os.pathsep.join([str(tools_dir(directory)), *path])
    env["DOC_TEST_STATE"] = str(directory)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def localize(code: str, port: int) -> str:
    """The example as run here: the test server's port, this interpreter's `sluice`."""
    code = _ADDRESS.sub(f"127.0.0.1:{port}", code)
    return code.replace(".venv/bin/sluice", shlex.quote(str(SLUICE)))


# A page's shell blocks share one terminal, as a reader's do: what one exports, the
# next sees (the exports are saved at exit and loaded at the start of the next).
_SHELL_PRELUDE = """set -eo pipefail
if [ -f "$DOC_TEST_STATE/exports.sh" ]; then . "$DOC_TEST_STATE/exports.sh"; fi
trap 'export -p > "$DOC_TEST_STATE/exports.sh"' EXIT
curl() { command curl --fail-with-body --max-time 40 "$@"; }
"""


def run(example: Example, port: int, directory: Path) -> subprocess.CompletedProcess[str]:
    """Run a `run` block in `directory`; the finished process (output captured)."""
    code = localize(example.code, port)
    if example.language in ("python", "py"):
        script = directory / f"example_{example.line}.py"
        script.write_text(code)
        command = [sys.executable, "-W", "error", str(script)]
    elif example.language in ("sh", "bash", "shell"):
        command = ["bash", "-c", _SHELL_PRELUDE + code]
    else:
        raise ValueError(f"{example.name}: cannot run a {example.language} block")
    return subprocess.run(
        command,
        cwd=directory,
        env=environment(directory),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def stand_in_environ(text: str) -> dict[str, str]:
    """Values for every `${env:VAR}` in `text` (a client key hash must parse as one)."""
    names = set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", text))
    return {n: "sha256:" + "0" * 64 if n.endswith("_HASH") else "doc-test-value" for n in names}


def config_text(example: Example) -> str:
    """The config an example amounts to (a `config-models` list inside a router)."""
    if example.kind != "config-models":
        return example.code
    models = yaml.safe_load(example.code)
    router = {"id": "doc-test", **models}
    return yaml.safe_dump({"routers": {"language": [router]}}, sort_keys=False)


def save_configs(examples: list[Example], directory: Path) -> None:
    """Write every named `config NAME` block of a page into `directory`."""
    for example in examples:
        if example.kind == "config" and example.arg:
            (directory / example.arg).write_text(example.code)
