"""Who gets in: client keys (Bearer and subprotocol), router allowlists, Origins,
per-key limits, loopback-only without keys, and `sluice hash-key`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from config.models import AuthConfig, SluiceConfig
from fakes.openai_server import FakeOpenAI
from observability.logs import JsonFormatter
from security.access import OriginPolicy
from security.exposure import exposure_problem, is_loopback
from security.keys import KeyRing, generate_key, hash_key, verify_key
from server import main
from tests.conftest import MakeClient, collect, openai_model, text_of
from tests.ops_helpers import scrape, value, with_sections

GOOD = "sluice-good-key-0123456789"
LIMITED = "sluice-limited-key-abcdef"
SCRYPTED = "correct horse battery staple"
DISCARD = "http://127.0.0.1:9/v1"  # never contacted: auth is decided before any provider call


def secured_config(fake: FakeOpenAI, **auth: Any) -> SluiceConfig:
    """Language routers r and other (both on `fake`), speech router s; three keys."""
    config = SluiceConfig.model_validate(
        {
            "routers": {
                "language": [
                    {"id": "r", "models": [openai_model("a", fake)]},
                    {"id": "other", "models": [openai_model("b", fake)]},
                ],
                "speech": [
                    {
                        "id": "s",
                        "speak": {"models": [{"id": "tts", "openai": {"base_url": DISCARD}}]},
                        "listen": {"models": [{"id": "stt", "openai": {"base_url": DISCARD}}]},
                    }
                ],
            }
        }
    )
    keys = [
        {"id": "good", "hash": hash_key(GOOD)},
        {"id": "limited", "hash": hash_key(LIMITED), "routers": ["other"]},
        {"id": "human", "hash": hash_key(SCRYPTED, "scrypt"), "routers": ["r", "s"]},
    ]
    return with_sections(config, auth={"keys": keys, **auth})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


SOCKETS = ["/v1/language/r/chatStream", "/v1/speech/s/speak", "/v1/speech/s/listen"]


async def upgrade_status(client: TestClient[Any, Any], path: str, **kwargs: Any) -> int:
    """101 when the websocket opened, else the HTTP status of the refusal."""
    try:
        ws = await client.ws_connect(path, **kwargs)
    except aiohttp.WSServerHandshakeError as error:
        return error.status
    await ws.close()
    return 101


# ---- keys ------------------------------------------------------------------------


def test_hashes_verify_and_never_contain_the_key() -> None:
    key = generate_key()
    assert key.startswith("sluice-") and len(key) == 50
    assert all(c.isalnum() or c in "-_" for c in key)  # a valid subprotocol token
    for scheme in ("sha256", "scrypt"):
        stored = hash_key(key, scheme)
        assert key not in stored
        assert verify_key(key, stored)
        assert not verify_key(key + "x", stored)
    assert (
        hash_key("abc")
        == "sha256:" + "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


async def test_key_ring_finds_sha256_and_scrypt_entries() -> None:
    auth = AuthConfig.model_validate(
        {
            "keys": [
                {"id": "fast", "hash": hash_key("k1")},
                {"id": "slow", "hash": hash_key("k2", "scrypt")},
                {"id": "bare", "hash": hash_key("k3").removeprefix("sha256:").upper()},
            ]
        }
    )
    ring = KeyRing(auth.keys)
    assert (await ring.lookup("k1")).id == "fast"  # type: ignore[union-attr]
    assert (await ring.lookup("k2")).id == "slow"  # type: ignore[union-attr]
    assert (await ring.lookup("k2")).id == "slow"  # type: ignore[union-attr]  # cached
    assert (await ring.lookup("k3")).id == "bare"  # type: ignore[union-attr]
    assert await ring.lookup("nope") is None


def test_a_plain_key_in_the_hash_field_is_refused_by_config() -> None:
    with pytest.raises(ValueError, match="never put the key itself here"):
        AuthConfig.model_validate({"keys": [{"id": "x", "hash": "sluice-plain-key"}]})


def test_hash_key_cli_generates_or_reads_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["hash-key", "--generate"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].removeprefix("key:  ")
    stored = out[1].removeprefix("hash: ")
    assert verify_key(key, stored)
    monkeypatch.setattr("sys.stdin", io.StringIO("my-key\n"))
    assert main(["hash-key", "--scheme", "scrypt"]) == 0
    stored = capsys.readouterr().out.strip()
    assert stored.startswith("scrypt:") and verify_key("my-key", stored)


# ---- authentication on every endpoint --------------------------------------------


async def test_every_endpoint_wants_a_valid_key(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(secured_config(fake_a))
    for path in SOCKETS:
        assert await upgrade_status(client, path) == 401, path
        assert await upgrade_status(client, path, headers=bearer("wrong")) == 401, path
        assert await upgrade_status(client, path, headers=bearer(GOOD)) == 101, path
        assert await upgrade_status(client, path, headers=bearer(SCRYPTED)) == 101, path
    for path in ("/v1/language/", "/v1/speech/"):
        assert (await client.get(path)).status == 401
        assert (await client.get(path, headers=bearer("wrong"))).status == 401
        assert (await client.get(path, headers=bearer(GOOD))).status == 200
    chat = {"message": {"content": "hi"}}
    resp = await client.post("/v1/language/r/chat", json=chat)
    assert resp.status == 401
    body = await resp.json()
    assert body["name"] == "unauthorized" and "Bearer" in body["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.post("/v1/language/r/chat", json=chat, headers=bearer(GOOD))
    assert resp.status == 200
    # liveness, readiness and metrics stay open to probes and scrapers
    for path in ("/v1/health", "/v1/ready", "/metrics"):
        assert (await client.get(path)).status == 200, path
    assert fake_a.stats.requests == 1  # nothing unauthenticated reached the provider


async def test_router_allowlist_is_403_before_the_upgrade_and_filters_listings(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    client = await sluice(secured_config(fake_a))
    for path in SOCKETS:
        assert await upgrade_status(client, path, headers=bearer(LIMITED)) == 403, path
    other = "/v1/language/other/chatStream"
    assert await upgrade_status(client, other, headers=bearer(LIMITED)) == 101
    resp = await client.post(
        "/v1/language/r/chat", json={"message": {"content": "x"}}, headers=bearer(LIMITED)
    )
    assert resp.status == 403 and (await resp.json())["name"] == "forbidden"
    # a forbidden router and an unknown one look the same to a limited key
    assert (
        await upgrade_status(client, "/v1/language/nope/chatStream", headers=bearer(LIMITED)) == 403
    )
    listing = await (await client.get("/v1/language/", headers=bearer(LIMITED))).json()
    assert [r["id"] for r in listing["routers"]] == ["other"]
    assert (await (await client.get("/v1/speech/", headers=bearer(LIMITED))).json()) == {
        "routers": []
    }
    listing = await (await client.get("/v1/language/", headers=bearer(SCRYPTED))).json()
    assert [r["id"] for r in listing["routers"]] == ["r"]
    metrics = await scrape(client)
    assert value(metrics, "sluice_rejections_total", reason="forbidden") == 5


async def test_browsers_send_the_key_as_a_subprotocol_and_get_sluice_v1_back(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    client = await sluice(secured_config(fake_a))
    for path in SOCKETS:
        ws = await client.ws_connect(path, protocols=("sluice.v1", f"sluice.auth.{GOOD}"))
        assert ws.protocol == "sluice.v1"  # the key is never echoed
        await ws.close()
        status = await upgrade_status(client, path, protocols=("sluice.v1", "sluice.auth.bad"))
        assert status == 401
    async with client.ws_connect(
        "/v1/language/r/chatStream", protocols=("sluice.v1", f"sluice.auth.{GOOD}")
    ) as ws:
        await ws.send_str(json.dumps({"request_id": "b1", "message": {"content": "hi"}}))
        frames = await collect(ws, 1)
    assert text_of(frames["b1"]) == "Hello from fake"


async def test_a_key_offered_without_sluice_v1_is_refused_and_never_logged(
    sluice: MakeClient, fake_a: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await sluice(secured_config(fake_a))
    for path in SOCKETS:
        status = await upgrade_status(client, path, protocols=(f"sluice.auth.{GOOD}",))
        assert status == 400
    assert await upgrade_status(client, SOCKETS[0], headers=bearer("not-this-one")) == 401
    assert GOOD not in caplog.text and "not-this-one" not in caplog.text


def test_the_log_formatter_masks_client_keys_quoted_by_libraries() -> None:
    record = logging.makeLogRecord(
        {"msg": f"protocols ['sluice.auth.{GOOD}'] and Authorization: Bearer {LIMITED}"}
    )
    line = JsonFormatter().format(record)
    assert GOOD not in line and LIMITED not in line and "sluice.auth.***" in line


async def test_without_keys_everyone_is_let_in_and_the_subprotocol_is_optional(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    config = SluiceConfig.model_validate(
        {"routers": {"language": [{"id": "r", "models": [openai_model("a", fake_a)]}]}}
    )
    client = await sluice(config)
    assert await upgrade_status(client, "/v1/language/r/chatStream") == 101
    assert await upgrade_status(client, "/v1/language/r/chatStream", headers=bearer("any")) == 101
    ws = await client.ws_connect("/v1/language/r/chatStream", protocols=("sluice.v1",))
    assert ws.protocol == "sluice.v1"
    await ws.close()


async def test_metrics_can_require_a_key(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(with_sections(secured_config(fake_a), metrics={"require_key": True}))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=bearer(GOOD))).status == 200
    assert (await client.get("/v1/health")).status == 200


# ---- Origins ---------------------------------------------------------------------


def test_origin_policy() -> None:
    same = OriginPolicy([])
    assert same.allows("http://127.0.0.1:9099", "127.0.0.1:9099")
    assert same.allows("https://gw.example.com", "gw.example.com")
    assert same.allows("https://gw.example.com", "gw.example.com:443")
    assert not same.allows("http://127.0.0.1:9098", "127.0.0.1:9099")
    assert not same.allows("https://evil.example", "gw.example.com")
    assert not same.allows("null", "gw.example.com")
    listed = OriginPolicy(
        ["https://app.example.com", "https://*.corp.example", "http://localhost:3000"]
    )
    assert listed.allows("https://app.example.com", "gw")
    assert listed.allows("https://APP.example.com", "gw")
    assert listed.allows("https://a.b.corp.example", "gw")
    assert not listed.allows("https://corp.example", "gw")
    assert not listed.allows("http://a.corp.example", "gw")  # scheme matters
    assert not listed.allows("https://app.example.com:8443", "gw")
    assert listed.allows("http://localhost:3000", "gw")
    assert not listed.allows("http://localhost:3001", "gw")
    assert OriginPolicy(["*"]).allows("https://anything.example", "gw")


async def test_origin_allowlist_guards_upgrades_and_posts(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    client = await sluice(secured_config(fake_a, origins=["https://app.example.com"]))
    for path in SOCKETS:
        ok = {**bearer(GOOD), "Origin": "https://app.example.com"}
        evil = {**bearer(GOOD), "Origin": "https://evil.example"}
        assert await upgrade_status(client, path, headers=ok) == 101, path
        assert await upgrade_status(client, path, headers=evil) == 403, path
        assert await upgrade_status(client, path, headers=bearer(GOOD)) == 101, path  # no Origin
    # a cross-site form post cannot spend credits either
    resp = await client.post(
        "/v1/language/r/chat",
        data=json.dumps({"message": {"content": "hi"}}),
        headers={**bearer(GOOD), "Origin": "https://evil.example", "Content-Type": "text/plain"},
    )
    assert resp.status == 403 and (await resp.json())["name"] == "origin_not_allowed"
    # the origin check comes first: no key needed to be refused
    assert (
        await upgrade_status(client, SOCKETS[0], headers={"Origin": "https://evil.example"}) == 403
    )


async def test_same_origin_only_by_default(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    config = SluiceConfig.model_validate(
        {"routers": {"language": [{"id": "r", "models": [openai_model("a", fake_a)]}]}}
    )
    client = await sluice(config)
    host = f"http://{client.host}:{client.port}"
    path = "/v1/language/r/chatStream"
    assert await upgrade_status(client, path, headers={"Origin": host}) == 101
    assert await upgrade_status(client, path, headers={"Origin": "http://evil.example"}) == 403


# ---- per-key limits --------------------------------------------------------------


async def test_rate_limit_per_key_ends_just_the_request(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    config = secured_config(fake_a)
    keys = [k.model_dump() for k in config.auth.keys]
    keys[0]["rate_limit"] = "3/m"
    client = await sluice(with_sections(config, auth={"keys": keys}))
    async with client.ws_connect("/v1/language/r/chatStream", headers=bearer(GOOD)) as ws:
        for i in range(4):
            await ws.send_str(json.dumps({"request_id": f"q{i}", "message": {"content": "x"}}))
            frames = await collect(ws, 1)
            if i < 3:
                assert text_of(frames[f"q{i}"]) == "Hello from fake"
        (refused,) = frames["q3"]
        assert refused["error"]["name"] == "rate_limited"
        assert refused["error"]["finish_reason"] == "error"
        assert 0 < refused["error"]["retry_after"] <= 20
        assert refused["error"]["limit"] == "rate_limit"
    # the bucket is the key's, shared by HTTP
    resp = await client.post(
        "/v1/language/r/chat", json={"message": {"content": "x"}}, headers=bearer(GOOD)
    )
    assert resp.status == 429 and (await resp.json())["name"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) >= 1
    # other keys have their own (here: none)
    resp = await client.post(
        "/v1/language/r/chat", json={"message": {"content": "x"}}, headers=bearer(SCRYPTED)
    )
    assert resp.status == 200
    metrics = await scrape(client)
    assert value(metrics, "sluice_rejections_total", reason="rate_limited") == 2


async def test_sockets_per_key_and_in_total(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    config = with_sections(
        secured_config(fake_a), limits={"max_sockets_per_key": 2, "max_sockets": 3}
    )
    client = await sluice(config)
    path = SOCKETS[0]
    first = [await client.ws_connect(path, headers=bearer(GOOD)) for _ in range(2)]
    assert await upgrade_status(client, path, headers=bearer(GOOD)) == 429
    third = await client.ws_connect(path, headers=bearer(SCRYPTED))
    assert await upgrade_status(client, path, headers=bearer(SCRYPTED)) == 503  # total
    await first[0].close()
    await receive_close(first[0])
    for _ in range(100):
        status = await upgrade_status(client, path, headers=bearer(GOOD))
        if status == 101:
            break
        await asyncio.sleep(0.02)  # the server releases the slot when its handler ends
    assert status == 101
    for ws in (first[1], third):
        await ws.close()
    metrics = await scrape(client)
    assert value(metrics, "sluice_rejections_total", reason="too_many_sockets") >= 2


async def receive_close(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Wait until the server has seen the close (its handler ended)."""
    await ws.receive()


# ---- exposure --------------------------------------------------------------------


def test_no_keys_means_loopback_only(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.8")
    open_auth = AuthConfig()
    assert exposure_problem("127.0.0.1", open_auth) is None
    assert "allow_unauthenticated" in (exposure_problem("0.0.0.0", open_auth) or "")
    assert exposure_problem("0.0.0.0", AuthConfig(allow_unauthenticated=True)) is None
    keyed = AuthConfig.model_validate({"keys": [{"id": "k", "hash": hash_key("k")}]})
    assert exposure_problem("0.0.0.0", keyed) is None
    path = tmp_path / "open.yaml"
    path.write_text("server:\n  host: 0.0.0.0\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "refusing to listen on '0.0.0.0'" in capsys.readouterr().err
    assert main(["serve", "--host", "10.1.2.3"]) == 2
