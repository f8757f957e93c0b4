"""HTTP endpoints end to end: sync chat, router listing, health, readiness, secrets."""

from __future__ import annotations

import json

from fakes.openai_server import FakeOpenAI
from tests.conftest import MakeClient, make_config, openai_model


async def test_sync_chat_answers_in_glides_schema(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    resp = await client.post(
        "/v1/language/r/chat",
        json={
            "message": {"role": "user", "content": "hello"},
            "message_history": [{"role": "system", "content": "be brief"}],
            "override_params": {"a": {"message": {"role": "user", "content": "override!"}}},
        },
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["router_id"] == "r"
    assert body["model_id"] == "a" and body["provider_id"] == "openai"
    assert body["model_name"] == "gpt-a" and body["cached"] is False
    assert isinstance(body["created_at"], int) and body["id"]
    response = body["model_response"]
    assert response["message"] == {"role": "assistant", "content": "Hello from fake"}
    assert set(response["token_usage"]) == {"prompt_tokens", "response_tokens", "total_tokens"}
    sent = fake_a.stats.last_body
    assert sent is not None
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "override!"},
    ]


async def test_sync_chat_fails_over_and_reports_all_models_unavailable(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_500"
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    resp = await client.post("/v1/language/r/chat", json={"message": {"content": "hi"}})
    assert resp.status == 200
    assert (await resp.json())["model_id"] == "b"

    fake_b.script.fault = "http_500"
    resp = await client.post("/v1/language/r/chat", json={"message": {"content": "hi"}})
    assert resp.status == 503
    body = await resp.json()
    assert body["name"] == "all_models_unavailable"
    assert "sk-test" not in json.dumps(body)


async def test_sync_chat_rejects_bad_payloads(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    resp = await client.post("/v1/language/r/chat", data=b"{nope")
    assert resp.status == 400 and (await resp.json())["name"] == "payload_parse_error"
    resp = await client.post("/v1/language/r/chat", json={"message": {"role": "x", "content": ""}})
    assert resp.status == 400
    body = await resp.json()
    assert body["name"] == "payload_parse_error" and "message.role" in body["message"]
    assert fake_a.stats.requests == 0


async def test_router_listing_never_shows_secrets(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    resp = await client.get("/v1/language/")
    text = await resp.text()
    assert resp.status == 200
    assert "sk-test-SECRET-1234" not in text
    routers = json.loads(text)["routers"]
    assert routers[0]["id"] == "r"
    assert routers[0]["models"][0] == {
        "id": "a",
        "provider": "openai",
        "model_name": "gpt-a",
        "weight": 1.0,
        "health": "healthy",
        "capabilities": ["image_urls", "images", "tools"],
    }


async def test_health_and_readiness(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    assert (await client.get("/v1/health/")).status == 200
    resp = await client.get("/v1/ready")
    assert resp.status == 200 and (await resp.json())["ready"] is True
    assert (await (await client.get("/v1/speech/")).json()) == {"routers": []}
