"""chatStream end to end: a real websocket client against Sluice and fake upstreams."""

from __future__ import annotations

import asyncio
import json

from aiohttp import WSMsgType

from fakes.openai_server import FakeOpenAI
from tests.conftest import (
    MakeClient,
    collect,
    is_terminal,
    make_config,
    openai_model,
    receive_json,
    text_of,
)

URL = "/v1/language/r/chatStream"


def chat(request_id: str, text: str = "hi", **extra: object) -> str:
    return json.dumps(
        {"request_id": request_id, "message": {"role": "user", "content": text}, **extra}
    )


async def test_many_requests_share_one_socket(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    fake_a.script.delay = 0.01
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        for i in range(5):
            await ws.send_str(chat(f"req-{i}", metadata={"n": i, "tags": ["x"]}))
        frames = await collect(ws, 5)
    assert set(frames) == {f"req-{i}" for i in range(5)}
    for i in range(5):
        got = frames[f"req-{i}"]
        assert text_of(got) == "Hello from fake"
        for frame in got:
            assert frame["id"] == frame["request_id"] == f"req-{i}"
            assert frame["metadata"] == {"n": i, "tags": ["x"]}
            assert frame["router_id"] == "r"
            assert isinstance(frame["created_at"], int)
        last = got[-1]["chunk"]
        assert last["finish_reason"] == "complete"
        assert last["model_id"] == "a" and last["provider_id"] == "openai"
        assert last["model_name"] == "gpt-a"
        assert last["model_response"]["token_usage"]["total_tokens"] > 0
        assert sum(1 for f in got if is_terminal(f)) == 1


async def test_glide_clients_id_alias_is_accepted(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(
            json.dumps(
                {
                    "id": "glide-1",
                    "message": {"role": "user", "content": "hi"},
                    "message_history": [],
                }
            )
        )
        frames = await collect(ws, 1)
    last = frames["glide-1"][-1]
    assert last["id"] == "glide-1"
    assert last["chunk"]["model_response"]["finish_reason"] == "complete"


async def test_cancel_ends_the_request_and_closes_the_upstream_stream(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["tok"] * 200
    fake_a.script.delay = 0.05
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("c1"))
        first = await receive_json(ws)
        assert first["type"] == "chunk"
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "c1"}))
        frames = await collect(ws, 1)
        terminal = frames["c1"][-1]
        assert terminal["type"] == "error"
        assert terminal["error"]["name"] == "cancelled"
        assert terminal["error"]["finish_reason"] == "cancelled"
        await fake_a.wait_stream_closed(within=1.0)
        # the socket lives on: a cancel for an unknown id is a no-op, a new request works
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "nope"}))
        fake_a.script.chunks = ["ok"]
        fake_a.script.delay = 0
        await ws.send_str(chat("c2"))
        frames = await collect(ws, 1)
        assert set(frames) == {"c2"}
        assert text_of(frames["c2"]) == "ok"


async def test_client_disconnect_closes_upstream_and_leaves_no_task(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["tok"] * 200
    fake_a.script.delay = 0.05
    client = await sluice(make_config(openai_model("a", fake_a)))
    baseline = len(asyncio.all_tasks())
    ws = await client.ws_connect(URL)
    for i in range(3):
        await ws.send_str(chat(f"d{i}"))
    for _ in range(3):
        await receive_json(ws)
    await ws.close()
    await fake_a.wait_stream_closed(within=1.0, count=3)
    for _ in range(50):
        if len(asyncio.all_tasks()) <= baseline:
            break
        await asyncio.sleep(0.02)
    assert len(asyncio.all_tasks()) <= baseline


async def test_bad_frames_get_typed_errors_and_the_socket_lives(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str("{not json")
        err = await receive_json(ws)
        assert err["type"] == "error" and err["request_id"] is None
        assert err["error"]["name"] == "payload_parse_error"
        assert "finish_reason" not in err["error"]

        await ws.send_str(json.dumps({"message": {"role": "user", "content": "x"}}))
        err = await receive_json(ws)
        assert err["request_id"] is None and err["error"]["name"] == "invalid_request"

        await ws.send_str(json.dumps({"request_id": "b1", "message": {"role": "robot"}}))
        err = await receive_json(ws)
        assert err["request_id"] == "b1" and err["error"]["name"] == "payload_parse_error"
        assert err["error"]["finish_reason"] == "error"
        assert "message.role" in err["error"]["message"]

        await ws.send_str(json.dumps({"request_id": "b2", "type": "speak", "text": "x"}))
        err = await receive_json(ws)
        assert err["error"]["name"] == "unsupported_message_type"

        await ws.send_str(json.dumps({"request_id": "x" * 129, "message": {"content": "x"}}))
        err = await receive_json(ws)
        assert err["request_id"] is None and err["error"]["name"] == "invalid_request"

        await ws.send_bytes(b"\x00garbage")
        err = await receive_json(ws)
        assert err["error"]["name"] == "invalid_request"

        await ws.send_str(chat("good"))
        frames = await collect(ws, 1)
        assert text_of(frames["good"]) == "Hello from fake"


async def test_duplicate_active_request_id_is_rejected_without_ending_the_original(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["a", "b", "c", "d"]
    fake_a.script.delay = 0.05
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("dup"))
        await asyncio.sleep(0.02)
        await ws.send_str(chat("dup"))
        frames = await collect(ws, 1)
    got = frames["dup"]
    dupes = [f for f in got if f["type"] == "error"]
    assert len(dupes) == 1 and dupes[0]["error"]["name"] == "duplicate_request_id"
    assert "finish_reason" not in dupes[0]["error"]
    assert text_of(got) == "abcd"
    assert fake_a.stats.requests == 1


async def test_a_finished_request_id_can_be_used_again(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        for _ in range(2):
            await ws.send_str(chat("again"))
            frames = await collect(ws, 1)
            assert text_of(frames["again"]) == "Hello from fake"


async def test_mid_stream_failure_resets_then_restarts_on_the_next_model(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["partial", " text", " lost"]
    fake_a.script.fault = "truncated"
    fake_a.script.fault_after_chunks = 2
    client = await sluice(
        make_config(openai_model("a", fake_a), openai_model("b", fake_b), mid_stream="restart")
    )
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("m1"))
        frames = await collect(ws, 1)
    got = frames["m1"]
    kinds = [f["type"] for f in got]
    reset = got[kinds.index("error")]
    assert reset["error"]["name"] == "model_unavailable"
    assert "finish_reason" not in reset["error"]
    assert reset["error"]["model_id"] == "a"
    assert text_of(got) == "Backup answer"
    assert got[-1]["chunk"]["model_id"] == "b"


async def test_failure_before_the_first_chunk_fails_over_silently(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_500"
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("s1"))
        frames = await collect(ws, 1)
    assert [f["type"] for f in frames["s1"]] == ["chunk"] * len(frames["s1"])
    assert text_of(frames["s1"]) == "Backup answer"


async def test_only_faulty_models_end_with_all_models_unavailable(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_500"
    client = await sluice(make_config(openai_model("a", fake_a, error_budget="100/s")))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("f1", metadata={"k": "v"}))
        frames = await collect(ws, 1)
    (terminal,) = frames["f1"]
    assert terminal["error"]["name"] == "all_models_unavailable"
    assert terminal["error"]["finish_reason"] == "error"
    assert terminal["error"]["id"] == "f1"
    assert terminal["metadata"] == {"k": "v"}
    assert "a: transient (HTTP 500)" in terminal["error"]["message"]
    assert "sk-test-SECRET" not in json.dumps(terminal)


async def test_unknown_router_is_404_before_upgrade(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    resp = await client.get("/v1/language/nope/chatStream")
    assert resp.status == 404
    assert (await resp.json())["name"] == "router_not_found"
    resp = await client.post("/v1/language/nope/chat", json={"message": {"content": "x"}})
    assert resp.status == 404
    resp = await client.get("/v1/no/such/route")
    assert resp.status == 404
    assert (await resp.json())["name"] == "route_not_found"


async def test_oversized_frame_closes_with_1009(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    config = make_config(openai_model("a", fake_a)).model_copy(
        update={
            "limits": make_config(openai_model("a", fake_a)).limits.model_copy(
                update={"max_frame_bytes": 2048}
            )
        }
    )
    client = await sluice(config)
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("big", text="x" * 5000))
        msg = await ws.receive()
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert ws.close_code == 1009


async def test_a_content_filtered_answer_ends_the_request_without_failover(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.fault = "empty"
    fake_a.script.finish_reason = "content_filter"
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("cf"))
        frames = await collect(ws, 1)
    (terminal,) = frames["cf"]
    assert terminal["chunk"]["finish_reason"] == "content_filtered"
    assert terminal["chunk"]["model_id"] == "a"
    assert fake_b.stats.requests == 0
