"""Config reload in one process: a real server on loopback, fake providers, the
config file rewritten and `Reloader.reload()` called (what SIGHUP runs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from config import load_config
from config.models import LanguageModelConfig
from fakes.openai_server import FakeOpenAI
from providers.registry import build_chat_provider
from providers.types import ChatProvider, ErrorCategory, ProviderError
from routing.router import ModelRouter
from routing.strategies import PriorityStrategy
from security.keys import hash_key
from server import build_app
from serving.reload import CONFIG_SOURCE, RELOADER, ConfigSource, ReloadOutcome, enable_disabled
from tests.conftest import FAST_CLIENT, FAST_RETRY, collect, is_terminal, receive_json, text_of

KEY_ONE = "sluice-test-key-number-one"
KEY_TWO = "sluice-test-key-number-two"


def model(model_id: str, fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "id": model_id,
        "client": FAST_CLIENT,
        "openai": {"base_url": fake.url, "model": f"gpt-{model_id}", "api_key": "sk-reload-9"},
    }


def router(router_id: str, *models: dict[str, Any]) -> dict[str, Any]:
    return {"id": router_id, "retry": FAST_RETRY, "models": list(models)}


def write(path: Path, *routers: dict[str, Any], **top: Any) -> None:
    """A config file (JSON is YAML) with these language routers."""
    path.write_text(json.dumps({"routers": {"language": list(routers)}, **top}, indent=2))


async def start(aiohttp_client: Any, path: Path) -> TestClient[Any, Any]:
    """Sluice serving `path`, reloadable from it."""
    app = build_app(load_config(path))
    app[CONFIG_SOURCE] = ConfigSource(str(path), "127.0.0.1")
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


def reload(client: TestClient[Any, Any]) -> ReloadOutcome:
    return client.app[RELOADER].reload()


def chat(request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "message": {"role": "user", "content": "hi"}}


def model_ids(frames: list[dict[str, Any]]) -> set[str]:
    return {f["chunk"]["model_id"] for f in frames if f["type"] == "chunk"}


async def reloads(client: TestClient[Any, Any], outcome: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(f'sluice_config_reloads_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no reload counter for {outcome}")


async def first_chunks(ws: Any, count: int) -> dict[str, list[dict[str, Any]]]:
    """Frames until each of `count` requests has sent a chunk."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    while len(by_id) < count:
        frame = await receive_json(ws)
        assert frame["type"] == "chunk", frame
        by_id.setdefault(frame["request_id"], []).append(frame)
    return by_id


async def test_reload_under_load_finishes_every_stream_and_serves_new_requests_from_the_new_config(
    aiohttp_client: Any, tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.chunks = [f"a{i} " for i in range(12)]
    fake_a.script.delay = 0.05
    path = tmp_path / "sluice.yaml"
    write(path, router("r", model("a", fake_a)))
    client = await start(aiohttp_client, path)
    sockets = [await client.ws_connect("/v1/language/r/chatStream") for _ in range(2)]
    for s, ws in enumerate(sockets):
        for i in range(3):
            await ws.send_json(chat(f"s{s}-{i}"))
    started = [await first_chunks(ws, 3) for ws in sockets]

    write(path, router("r", model("b", fake_b)), router("r2", model("a2", fake_a)))
    outcome = reload(client)
    assert outcome.outcome == "applied"
    assert outcome.changed == ("r",)
    assert outcome.added == ("r2",)

    for ws, early in zip(sockets, started, strict=True):
        await ws.send_json(chat("after"))
        rest = await collect(ws, 4, within=20)
        for request_id, frames in early.items():
            answer = frames + rest[request_id]
            assert is_terminal(answer[-1])
            assert text_of(answer) == "".join(fake_a.script.chunks)
            assert model_ids(answer) == {"a"}  # the router it started on
        assert text_of(rest["after"]) == "Backup answer"
        assert model_ids(rest["after"]) == {"b"}
    listed = await (await client.get("/v1/language/")).json()
    assert [r["id"] for r in listed["routers"]] == ["r", "r2"]
    assert [m["id"] for m in listed["routers"][0]["models"]] == ["b"]
    ws2 = await client.ws_connect("/v1/language/r2/chatStream")
    await ws2.send_json(chat("new"))
    assert model_ids((await collect(ws2, 1, within=20))["new"]) == {"a2"}
    assert await reloads(client, "applied") == 1
    for ws in [*sockets, ws2]:
        assert not ws.closed
        await ws.close()


async def test_a_removed_router_finishes_in_flight_requests_and_refuses_new_ones(
    aiohttp_client: Any, tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_b.script.chunks = [f"b{i} " for i in range(10)]
    fake_b.script.delay = 0.05
    path = tmp_path / "sluice.yaml"
    write(path, router("r", model("a", fake_a)), router("gone", model("b", fake_b)))
    client = await start(aiohttp_client, path)
    ws = await client.ws_connect("/v1/language/gone/chatStream")
    await ws.send_json(chat("running"))
    early = await first_chunks(ws, 1)

    write(path, router("r", model("a", fake_a)))
    assert reload(client).removed == ("gone",)

    await ws.send_json(chat("late"))
    rest = await collect(ws, 2, within=20)
    assert text_of(early["running"] + rest["running"]) == "".join(fake_b.script.chunks)
    refused = rest["late"]
    assert len(refused) == 1 and is_terminal(refused[0])
    assert refused[0]["error"]["name"] == "router_not_found"
    assert not ws.closed
    await ws.close()
    for resp in (
        await client.get("/v1/language/gone/chatStream"),
        await client.post("/v1/language/gone/chat", json={"message": chat("x")["message"]}),
    ):
        assert resp.status == 404
        assert (await resp.json())["name"] == "router_not_found"


async def test_reload_enables_a_model_a_401_disabled(
    aiohttp_client: Any, tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    path = tmp_path / "sluice.yaml"
    write(path, router("r", model("a", fake_a)))
    client = await start(aiohttp_client, path)
    fake_a.script.fault = "http_401"
    ws = await client.ws_connect("/v1/language/r/chatStream")
    await ws.send_json(chat("denied"))
    frames = (await collect(ws, 1, within=20))["denied"]
    assert frames[-1]["error"]["name"] == "all_models_unavailable"
    listed = await (await client.get("/v1/language/")).json()
    assert listed["routers"][0]["models"][0]["health"] == "disabled"

    fake_a.script.fault = "none"  # the operator fixed the credentials
    outcome = reload(client)  # the same file
    assert (outcome.outcome, outcome.reenabled) == ("unchanged", 1)
    await ws.send_json(chat("allowed"))
    assert text_of((await collect(ws, 1, within=20))["allowed"]) == "Hello from fake"
    assert await reloads(client, "unchanged") == 1
    await ws.close()


async def test_an_invalid_file_is_rejected_and_the_old_config_keeps_serving(
    aiohttp_client: Any,
    tmp_path: Path,
    fake_a: FakeOpenAI,
    fake_b: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "sluice.yaml"
    write(path, router("r", model("a", fake_a)))
    client = await start(aiohttp_client, path)
    path.write_text(
        "routers:\n"
        "  language:\n"
        "    - id: r\n"
        "      models:\n"
        "        - id: b\n"
        "          wieght: 2\n"
        f"          openai: {{base_url: {fake_b.url}}}\n"
        "    - id: r3\n"
        "      strategy: fastest\n"
        "      models: []\n"
    )
    with caplog.at_level(logging.ERROR, logger="sluice.reload"):
        outcome = reload(client)
    assert outcome.outcome == "rejected"
    assert len(outcome.problems) == 3
    logged = {
        (r.file, r.line, r.field)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "config reload: problem"
    }
    assert logged == {
        (str(path), 6, "routers.language[0].models[0].wieght"),
        (str(path), 9, "routers.language[1].strategy"),
        (str(path), 10, "routers.language[1].models"),
    }
    assert await reloads(client, "rejected") == 1
    assert await reloads(client, "applied") == 0
    ws = await client.ws_connect("/v1/language/r/chatStream")
    await ws.send_json(chat("still"))
    frames = (await collect(ws, 1, within=20))["still"]
    assert (text_of(frames), model_ids(frames)) == ("Hello from fake", {"a"})
    await ws.close()


async def test_changed_client_keys_apply_to_new_upgrades_and_open_sockets_stay(
    aiohttp_client: Any, tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    path = tmp_path / "sluice.yaml"
    one = {"keys": [{"id": "one", "hash": hash_key(KEY_ONE)}]}
    two = {"keys": [{"id": "two", "hash": hash_key(KEY_TWO), "routers": ["r"]}]}
    write(path, router("r", model("a", fake_a)), auth=one)
    client = await start(aiohttp_client, path)
    url = "/v1/language/r/chatStream"

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    held = await client.ws_connect(url, headers=bearer(KEY_ONE))
    write(path, router("r", model("a", fake_a)), auth=two)
    assert reload(client).outcome == "applied"

    refused = await client.get(url, headers=bearer(KEY_ONE))
    assert (refused.status, (await refused.json())["name"]) == (401, "unauthorized")
    fresh = await client.ws_connect(url, headers=bearer(KEY_TWO))
    for ws, request_id in ((held, "old-key"), (fresh, "new-key")):
        await ws.send_json(chat(request_id))
        assert text_of((await collect(ws, 1, within=20))[request_id]) == "Hello from fake"
        await ws.close()


async def test_restart_only_fields_are_kept_and_named_in_the_log(
    aiohttp_client: Any, tmp_path: Path, fake_a: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sluice.yaml"
    write(path, router("r", model("a", fake_a)))
    client = await start(aiohttp_client, path)
    running = client.app[RELOADER]
    write(
        path,
        router("r", model("a", fake_a)),
        server={"port": 9123, "heartbeat": "5s"},
        limits={"max_requests_per_socket": 3},
    )
    with caplog.at_level(logging.WARNING, logger="sluice.reload"):
        outcome = running.reload()
    assert outcome.outcome == "unchanged"
    assert outcome.restart_only == (
        "server.port",
        "server.heartbeat",
        "limits.max_requests_per_socket",
    )
    warned = [r for r in caplog.records if "only on restart" in r.getMessage()]
    assert [r.fields for r in warned] == [list(outcome.restart_only)]  # type: ignore[attr-defined]
    health = await client.get("/v1/health")
    assert health.status == 200


async def test_a_speech_socket_on_a_removed_router_refuses_new_requests(
    aiohttp_client: Any, tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    path = tmp_path / "sluice.yaml"
    speech = {"id": "voice", "speak": {"models": [{"id": "espeak", "local": {}}]}}
    path.write_text(
        json.dumps({"routers": {"language": [router("r", model("a", fake_a))], "speech": [speech]}})
    )
    client = await start(aiohttp_client, path)
    ws = await client.ws_connect("/v1/speech/voice/speak")
    write(path, router("r", model("a", fake_a)))
    assert reload(client).removed == ("speech:voice",)
    await ws.send_json({"type": "speak", "request_id": "s1", "text": "hello", "final": True})
    frame = await receive_json(ws)
    assert frame["type"] == "error" and frame["error"]["name"] == "router_not_found"
    assert is_terminal(frame)
    assert not ws.closed
    await ws.close()


async def test_a_router_that_cannot_be_built_rejects_the_reload(
    aiohttp_client: Any, tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    def factory(config: Any, session: aiohttp.ClientSession) -> ChatProvider:
        if config.id == "broken":
            raise RuntimeError("this engine cannot start")
        return build_chat_provider(config, session)

    path = tmp_path / "sluice.yaml"
    write(path, router("r", model("a", fake_a)))
    app = build_app(load_config(path), provider_factory=factory)
    app[CONFIG_SOURCE] = ConfigSource(str(path), "127.0.0.1")
    client: TestClient[Any, Any] = await aiohttp_client(app)
    write(path, router("r", model("a", fake_a)), router("more", model("broken", fake_a)))
    outcome = reload(client)
    assert outcome.outcome == "rejected"
    assert outcome.problems == (
        f"{path}: routers: cannot build the routers: RuntimeError: this engine cannot start",
    )
    listed = await (await client.get("/v1/language/")).json()
    assert [r["id"] for r in listed["routers"]] == ["r"]
    assert await reloads(client, "rejected") == 1


def test_enable_disabled_resets_only_auth_disabled_models() -> None:
    models = [
        LanguageModelConfig.model_validate({"id": m, "error_budget": "1/m", "openai": {}})
        for m in ("denied", "failing", "fine")
    ]
    tracker = ModelRouter("r", models, PriorityStrategy())
    tracker.record_failure("denied", ProviderError(ErrorCategory.AUTH, "401", status=401), 1.0)
    tracker.record_failure("failing", ProviderError(ErrorCategory.TRANSIENT, "503"), 1.0)
    before = tracker.health_states(2.0)
    assert before == {"denied": "disabled", "failing": "unhealthy", "fine": "healthy"}
    assert enable_disabled([tracker, None, object()], 2.0) == 1
    assert tracker.health_states(2.0) == {**before, "denied": "healthy"}
