"""Stand-ins for `docker` and `kubectl` that check documented commands as far as can be
done without a container runtime or a cluster (the doc-example harness puts them first
on the PATH as `docker` and `kubectl`).

`python tests/doc_tools.py docker ARGS...` / `... kubectl ARGS...` in; an exit status
(0: what the real tool would have done works; 1/2/125: it would fail, with the reason
on stderr) out. What is checked:

- `docker build [-t TAG] CONTEXT`: the context has a Dockerfile.
- `docker run [--rm] [-d] [-i] [--name N] [-p HOST:CONTAINER] [-e NAME[=VALUE]]
  [-v SRC:DST[:ro]] IMAGE [ARGS...]`: the arguments (or the Dockerfile's CMD) after
  its `sluice` ENTRYPOINT use only flags that `sluice <command> --help` lists. The
  image's files are the Dockerfile's `COPY` sources and the `-v` mounts (which must
  exist); its environment is only what `-e` passes. `hash-key` and `check-config`
  really run (stdin passes through). `serve` loads the config it would load with
  that environment, and must be allowed to listen where it would (keys, or
  `allow_unauthenticated`, off loopback), on a non-loopback address (else `-p`
  reaches nothing) and on the port `-p` publishes. `stop`, `logs`, `rm`: accepted.
- `kubectl create namespace`, `kubectl create secret generic NAME
  --from-literal=K=V...` (recorded), `kubectl apply -k DIR`: the Deployment's
  Secrets exist (created earlier, or listed in the kustomization) and the
  ConfigMap's `sluice.yaml` loads with the Secrets' values as its environment;
  `rollout status|restart`: accepted.

State between invocations (the secrets created) lives in `$DOC_TEST_STATE`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from config import ConfigError, load_config  # noqa: E402
from config.loader import parse_config  # noqa: E402
from security.exposure import exposure_problem, is_loopback  # noqa: E402

SLUICE = str(Path(sys.executable).parent / "sluice")


class Refused(Exception):
    """The real tool would fail: the message says why; `status` is its exit code."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def dockerfile() -> str:
    """The repository's Dockerfile."""
    return (ROOT / "Dockerfile").read_text()


def dockerfile_json(instruction: str) -> list[str]:
    """The last exec-form (JSON array) value of `instruction` in the Dockerfile."""
    found = re.findall(rf"^{instruction}\s+(\[.*\])\s*$", dockerfile(), re.M)
    if not found:
        raise Refused(f"the Dockerfile has no exec-form {instruction}")
    value: list[str] = json.loads(found[-1])
    return value


def image_files() -> dict[str, Path]:
    """Container path -> repository file, from the Dockerfile's single-file COPY lines."""
    files: dict[str, Path] = {}
    for src, dst in re.findall(r"^COPY\s+(?!--from)(\S+)\s+(/\S+)\s*$", dockerfile(), re.M):
        if (ROOT / src).is_file():
            files[dst] = ROOT / src
    return files


def help_flags(command: str) -> set[str]:
    """The long options `sluice <command> --help` lists."""
    done = subprocess.run(
        [SLUICE, command, "--help"], capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise Refused(f"`sluice {command} --help` failed: {done.stderr.strip()}", 2)
    return set(re.findall(r"--[a-z][a-z-]*", done.stdout))


def option_value(args: list[str], flag: str) -> str | None:
    """The value given to `flag` (`--flag V` or `--flag=V`), or None."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def docker(argv: list[str]) -> int:
    """A `docker` command line in; its exit status out (see the module docstring)."""
    if not argv:
        raise Refused("docker: no command", 125)
    command, args = argv[0], argv[1:]
    if command == "build":
        context = next((a for a in reversed(args) if not a.startswith("-")), None)
        if context is None or not (Path(context) / "Dockerfile").is_file():
            raise Refused(f"docker build: no Dockerfile in {context!r}")
        return 0
    if command in ("stop", "logs", "rm"):
        return 0
    if command != "run":
        raise Refused(f"docker {command}: not something the docs should need", 125)
    return docker_run(args)


def docker_run(args: list[str]) -> int:
    """`docker run OPTIONS IMAGE [ARGS]`: check or run what the container would."""
    env: dict[str, str] = {}
    mounts: dict[str, Path] = {}
    published: list[int] = []
    i = 0
    while i < len(args) and args[i].startswith("-"):
        flag = args[i]
        if flag in ("--rm", "-d", "--detach", "-i", "--interactive", "-t", "-it"):
            i += 1
            continue
        if i + 1 >= len(args):
            raise Refused(f"docker run: {flag} needs a value", 125)
        value = args[i + 1]
        i += 2
        if flag == "--name":
            continue
        if flag in ("-p", "--publish"):
            published.append(int(value.rsplit(":", 1)[-1].split("/")[0]))
        elif flag in ("-e", "--env"):
            name, sep, given = value.partition("=")
            if sep:
                env[name] = given
            elif name in os.environ:
                env[name] = os.environ[name]
        elif flag in ("-v", "--volume"):
            parts = value.split(":")
            source = Path(parts[0])
            if not source.exists():
                raise Refused(f"docker run: the mounted {source} does not exist", 125)
            mounts[parts[1]] = source
        else:
            raise Refused(f"docker run: option {flag} is not one the docs should need", 125)
    if i >= len(args):
        raise Refused("docker run: no image", 125)
    image, command = args[i], args[i + 1 :]
    if not image.startswith("sluice"):
        raise Refused(f"docker run: {image!r} is not the image the docs build", 125)
    if dockerfile_json("ENTRYPOINT") != ["sluice"]:
        raise Refused("the image's ENTRYPOINT is not sluice")
    command = command or dockerfile_json("CMD")
    files = {**image_files(), **mounts}
    flags = {a.split("=", 1)[0] for a in command[1:] if a.startswith("--")}
    unknown = flags - help_flags(command[0])
    if unknown:
        raise Refused(f"sluice {command[0]}: unknown options {sorted(unknown)}", 2)
    if command[0] == "serve":
        return serve_check(command[1:], env, files, published)
    if command[0] == "check-config":
        command = [command[0], str(files.get(command[1], command[1]))]
    return subprocess.run([SLUICE, *command], env={**env, "PATH": "/usr/bin:/bin"}).returncode


def serve_check(
    args: list[str], env: dict[str, str], files: dict[str, Path], ports: list[int]
) -> int:
    """`sluice serve ARGS` in the container: would it start, reachable on a published port?"""
    config_path = option_value(args, "--config")
    path = None if config_path is None else files.get(config_path)
    if config_path is not None and path is None:
        raise Refused(f"sluice serve: {config_path} is neither in the image nor mounted", 2)
    try:
        config = load_config(path, environ=env)
    except ConfigError as error:
        raise Refused(f"sluice serve exits 2:\n{error}", 2) from None
    host = option_value(args, "--host") or config.server.host
    port = int(option_value(args, "--port") or config.server.port)
    refusal = exposure_problem(host, config.auth)
    if refusal is not None:
        raise Refused(f"sluice serve exits 2: {refusal}", 2)
    if is_loopback(host):
        raise Refused(f"serving on {host} inside a container: -p cannot reach it")
    if port not in ports:
        raise Refused(f"sluice listens on {port} but docker run publishes {ports}")
    print(f"(doc-test docker: sluice serve would start on {host}:{port})", file=sys.stderr)
    return 0


def state_dir() -> Path:
    """Where invocations leave state for later ones ($DOC_TEST_STATE)."""
    return Path(os.environ["DOC_TEST_STATE"])


def kubectl(argv: list[str]) -> int:
    """A `kubectl` command line in; its exit status out (see the module docstring)."""
    args = list(argv)
    for flag in ("-n", "--namespace"):
        while flag in args:
            at = args.index(flag)
            del args[at : at + 2]
    if args[:2] == ["create", "namespace"] or args[:1] == ["rollout"]:
        return 0
    if args[:3] == ["create", "secret", "generic"]:
        name = args[3]
        literals = dict(
            a.removeprefix("--from-literal=").split("=", 1)
            for a in args[4:]
            if a.startswith("--from-literal=")
        )
        (state_dir() / f"secret-{name}.json").write_text(json.dumps(literals))
        return 0
    if args[:2] == ["apply", "-k"]:
        return apply_kustomization(Path(args[2]))
    raise Refused(f"kubectl {shlex.join(argv)}: not something the docs should need")


def apply_kustomization(directory: Path) -> int:
    """`kubectl apply -k DIR`: the pods would find their Secrets and a valid config."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((directory / resource).read_text()) if d]
    listed_secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "sluice"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # plain `env` values (REDIS_URL), then what the Secrets give
    env: dict[str, str] = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    for source in container.get("envFrom", []):
        name = source["secretRef"]["name"]
        created = state_dir() / f"secret-{name}.json"
        if created.is_file():
            env.update(json.loads(created.read_text()))
        elif name not in listed_secrets:
            raise Refused(f"the pods need Secret {name!r}: create it first")
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    try:
        parse_config(configmap["data"]["sluice.yaml"], source="configmap sluice.yaml", environ=env)
    except ConfigError as error:
        raise Refused(
            f"the pods would exit 2 (their Secret lacks what it needs):\n{error}"
        ) from None
    return 0


def main(argv: list[str]) -> int:
    """`doc_tools.py docker|kubectl ARGS...` -> the stand-in's exit status."""
    tool, args = argv[0], argv[1:]
    try:
        return docker(args) if tool == "docker" else kubectl(args)
    except Refused as refused:
        print(f"doc-test {tool}: {refused}", file=sys.stderr)
        return refused.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
