"""deploy/k8s and the Dockerfile, checked offline.

Every manifest validates against the Kubernetes JSON schemas bundled in the
`kubernetes-validate` package (strict: unknown fields are errors), for the
oldest and the newest Kubernetes version it ships. Then the pieces must agree:
probes on the right paths and port, a grace period longer than preStop + drain,
selectors that match the pods, config keys the Secret provides, and a Dockerfile
that matches the Makefile's build flags and pyproject's pins.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from config.loader import parse_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


REDIS = "sluice-redis"
"""redis.yaml's Deployment and Service (state.redis), beside Sluice's own."""


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of `kind` named `name` (default: Sluice's, not Redis's)."""
    found = [
        d
        for d in manifests()
        if d["kind"] == kind
        and (d["metadata"]["name"] == name if name else d["metadata"]["name"] != REDIS)
    ]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def schema_versions() -> list[str]:
    versions = sorted(kv_utils.all_versions(), key=lambda v: tuple(int(p) for p in v.split(".")))
    return [versions[0], kubernetes_validate.latest_version()]


@pytest.mark.parametrize("version", schema_versions())
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    docs = manifests()
    assert {d["kind"] for d in docs} == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} >= {
        ("Deployment", REDIS),
        ("Service", REDIS),
    }
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {error.message}")


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.yaml"}
    assert listed == files  # apply -k must never overwrite real keys with the template


def sluice_config() -> Any:
    text = by_kind("ConfigMap")["data"]["sluice.yaml"]
    keys = set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", text))
    # stand-in values shaped like the real ones (a client key hash must parse as one)
    environ = {k: "sha256:" + "0" * 64 if k.endswith("_HASH") else "x" for k in keys}
    environ.update(container_env())
    return parse_config(text, source="configmap", environ=environ), keys


def container_env() -> dict[str, str]:
    """The plain `env` values of Sluice's container."""
    return {e["name"]: e["value"] for e in container().get("env", []) if "value" in e}


def container() -> dict[str, Any]:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = pod["containers"]
    assert len(containers) == 1
    return containers[0]


def prestop_seconds(c: dict[str, Any]) -> float:
    pre_stop = c["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    return float(command[1])


def test_grace_period_outlasts_prestop_plus_drain() -> None:
    config, _ = sluice_config()
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    pre_stop = prestop_seconds(container())
    assert pre_stop >= 5, "the load balancer needs time to stop sending"
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > config.server.drain_grace + pre_stop + 5, (grace, config.server.drain_grace)


def test_probes_and_ports_point_at_sluice() -> None:
    config, _ = sluice_config()
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": config.server.port}
    assert config.server.host == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/v1/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v1/health/", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/v1/health/"
    assert c["args"][c["args"].index("--config") + 1].startswith(
        c["volumeMounts"][0]["mountPath"] + "/"
    )
    service = by_kind("Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_selectors_match_the_pods() -> None:
    deployment = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        by_kind("Service")["spec"]["selector"],
    ):
        assert selector.items() <= labels.items()
    target = by_kind("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    hpa = by_kind("HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] >= 2 and deployment["spec"]["replicas"] >= hpa["minReplicas"]


def test_config_and_keys_come_from_the_configmap_and_the_secret() -> None:
    _, keys = sluice_config()
    assert keys, "the config should read at least one provider key from the environment"
    secret = by_kind("Secret")
    c = container()
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in c["envFrom"]
    assert keys <= set(secret["stringData"]) | set(container_env())
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == by_kind("ConfigMap")["metadata"]["name"]
    assert "sluice.yaml" in by_kind("ConfigMap")["data"]


def dockerfile_user() -> str:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), re.M)
    assert users, "the image must not run as root"
    return users[-1].split(":")[0]


def test_pods_run_as_the_images_non_root_user() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == dockerfile_user() != "0"
    locked = container()["securityContext"]
    assert locked["allowPrivilegeEscalation"] is False
    assert locked["readOnlyRootFilesystem"] is True


def test_dockerfile_matches_makefile_and_pyproject() -> None:
    text = DOCKERFILE.read_text()
    makefile = (ROOT / "Makefile").read_text()
    make_flags = re.search(r"^LLAMA_CMAKE_ARGS\s*:=\s*(.+)$", makefile, re.M)
    docker_flags = re.search(r'^ARG LLAMA_CMAKE_ARGS="(.+)"$', text, re.M)
    assert make_flags and docker_flags
    assert docker_flags.group(1).split() == make_flags.group(1).split()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    local = pyproject["project"]["optional-dependencies"]["local"]
    llama = next(d for d in local if d.startswith("llama-cpp"))
    assert f'pip install "{llama}"' in text
    assert re.search(r'^RUN pip install "\.\[local\]"', text, re.M)  # the image has the engine
    assert re.search(r"^FROM python:3\.11-slim|^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    healthcheck = re.search(r"^HEALTHCHECK .*(?:\n\s+.*)*", text, re.M)
    assert healthcheck and "/v1/health/" in healthcheck.group(0)
    cmd = re.search(r'^CMD \["serve", "--config", "/etc/sluice/sluice\.yaml"\]$', text, re.M)
    assert cmd
    # the guide names the image's command as it is (its examples run in test_doc_examples)
    command = " ".join(json.loads(cmd.group(0).removeprefix("CMD ")))
    assert f"the default command is `{command}`" in " ".join(
        (ROOT / "docs" / "deploying.md").read_text().split()
    )
    image_config = parse_config(
        (ROOT / "deploy/docker/sluice.yaml").read_text(),
        source="deploy/docker/sluice.yaml",
        environ={"SLUICE_CLIENT_KEY_HASH": "sha256:" + "0" * 64},
    )
    assert image_config.server.host == "0.0.0.0" and image_config.auth.keys
    assert re.search(r'^ENTRYPOINT \["sluice"\]$', text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def test_sluice_shares_state_through_the_redis_beside_it() -> None:
    config, keys = sluice_config()
    assert config.state.redis is not None and "REDIS_URL" in keys
    url = urlsplit(container_env()["REDIS_URL"])
    redis_service = by_kind("Service", REDIS)
    redis_pods = by_kind("Deployment", REDIS)["spec"]["template"]
    assert url.hostname == redis_service["metadata"]["name"]
    (port,) = redis_service["spec"]["ports"]
    assert url.port == port["port"]
    assert redis_service["spec"]["selector"].items() <= redis_pods["metadata"]["labels"].items()
    (redis,) = redis_pods["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in redis["ports"]}
    assert container_ports[port["targetPort"]] == 6379
    args = redis["args"]
    assert args[args.index("--save") + 1] == "" and "--appendonly" in args  # no persistence
    # Sluice's selectors must not catch the Redis pods, nor Redis's Sluice's
    sluice_labels = by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert (
        not by_kind("Service")["spec"]["selector"].items()
        <= redis_pods["metadata"]["labels"].items()
    )
    assert not redis_service["spec"]["selector"].items() <= sluice_labels.items()


def test_the_compose_example_runs_sluice_on_a_redis() -> None:
    compose = yaml.safe_load((ROOT / "deploy/docker/compose.yaml").read_text())
    services = compose["services"]
    redis = services["redis"]
    assert redis["image"].startswith("redis:")
    sluices = [s for name, s in services.items() if name != "redis"]
    assert len(sluices) >= 2, "the example shows several instances sharing one Redis"
    base = parse_config(
        (ROOT / "deploy/docker/sluice.yaml").read_text(),
        source="deploy/docker/sluice.yaml",
        environ={"SLUICE_CLIENT_KEY_HASH": "sha256:" + "0" * 64},
    )
    for service in sluices:
        env = service["environment"]
        assert urlsplit(env["REDIS_URL"]).hostname == "redis"
        assert "redis" in service["depends_on"]
        source, target = service["volumes"][0].split(":")[:2]
        assert target == "/etc/sluice/sluice.yaml"
        path = (ROOT / "deploy/docker" / source).resolve()
        config = parse_config(
            path.read_text(),
            source=str(path),
            environ={**env, "SLUICE_CLIENT_KEY_HASH": "sha256:" + "0" * 64},
        )
        assert config.state.redis is not None
        # the same gateway as the image's own config, plus the shared state
        assert config.model_copy(update={"state": base.state}) == base
