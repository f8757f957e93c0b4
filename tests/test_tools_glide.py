"""Tool calls and images on Glide's surfaces: chatStream over a real websocket and
`POST /v1/language/{router}/chat`, against fake OpenAI upstreams.

Whole calls inside `chunk.model_response.message`, `finish_reason: other` plus
`finish_detail: tool_calls`, a break inside a call (invisible when held, a
restart under `fragments`), parallel calls, capability errors, images, and a
Glide 0.1.0 request that carries none of it seeing no change.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from fakes.openai_server import FakeOpenAI, FakeToolCall
from protocol.schema import ChatResponse, ChunkFrame, ErrorFrame
from tests.conftest import MakeClient, collect, make_config, openai_model, text_of

URL = "/v1/language/r/chatStream"
GLIDE_REASONS = {"complete", "max_tokens", "content_filtered", "error", "other"}
"""The finish reasons Glide's Python client accepts."""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


def chat(request_id: str, **extra: Any) -> str:
    return json.dumps(
        {"request_id": request_id, "message": {"role": "user", "content": "find it"}, **extra}
    )


def calls_of(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every tool call sent since the last model_unavailable reset."""
    calls: list[dict[str, Any]] = []
    for frame in frames:
        if frame["type"] == "error" and frame["error"]["name"] == "model_unavailable":
            calls = []
        elif frame["type"] == "chunk":
            calls.extend(frame["chunk"]["model_response"]["message"].get("tool_calls") or [])
    return calls


def _script(fake: FakeOpenAI, *calls: tuple[str, str]) -> None:
    fake.script.tool_calls = [
        FakeToolCall("lookup", arguments, id=call_id, pieces=3) for call_id, arguments in calls
    ]


async def test_chat_stream_sends_whole_calls_and_hides_a_break_inside_one(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    _script(fake_a, ("call_a", '{"q": "broken answer"}'))
    _script(fake_b, ("call_b", '{"q": "docs"}'))
    fake_a.script.fault = "cut_in_tool_call"
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("t1", tools=TOOLS, tool_choice="required"))
        frames = (await collect(ws, 1))["t1"]
    assert {f["type"] for f in frames} == {"chunk"}  # no model_unavailable
    for frame in frames:
        ChunkFrame.model_validate(frame)
    [call] = calls_of(frames)
    assert call == {
        "index": 0,
        "id": "call_b",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "docs"}'},
    }
    last = frames[-1]["chunk"]
    assert last["model_id"] == "b"
    assert last["finish_reason"] == last["model_response"]["finish_reason"] == "other"
    assert last["finish_detail"] == last["model_response"]["finish_detail"] == "tool_calls"
    assert all(f["chunk"]["model_response"]["message"]["content"] == "" for f in frames)
    assert fake_b.stats.last_body is not None
    assert fake_b.stats.last_body["tool_choice"] == "required"


async def test_chat_stream_parallel_calls_and_the_tool_loop(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    _script(fake_a, ("c1", '{"q": "one"}'), ("c2", '{"q": "two"}'))
    fake_a.script.tool_preamble = ["Looking", " up."]
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("p1", tools=TOOLS, parallel_tool_calls=True))
        frames = (await collect(ws, 1))["p1"]
        calls = calls_of(frames)
        assert text_of(frames) == "Looking up."
        assert [(c["index"], c["id"], json.loads(c["function"]["arguments"])) for c in calls] == [
            (0, "c1", {"q": "one"}),
            (1, "c2", {"q": "two"}),
        ]
        history = [
            {"role": "user", "content": "find it"},
            {
                "role": "assistant",
                "content": "Looking up.",
                "tool_calls": [{k: v for k, v in c.items() if k != "index"} for c in calls],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "result one"},
        ]
        await ws.send_str(
            json.dumps(
                {
                    "request_id": "p2",
                    "message_history": history,
                    "message": {"role": "tool", "tool_call_id": "c2", "content": "result two"},
                    "tools": TOOLS,
                }
            )
        )
        answer = (await collect(ws, 1))["p2"]
    assert text_of(answer) == "Hello from fake"
    assert answer[-1]["chunk"]["finish_reason"] == "complete"
    sent = fake_a.stats.last_body
    assert sent is not None
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "tool"]
    assert sent["messages"][1]["tool_calls"][1]["id"] == "c2"
    assert sent["messages"][3] == {"role": "tool", "content": "result two", "tool_call_id": "c2"}


async def test_fragments_mode_restarts_after_a_break_inside_a_call(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    _script(fake_a, ("call_a", '{"q": "first try"}'))
    _script(fake_b, ("call_b", '{"q": "second"}'))
    fake_a.script.fault = "cut_in_tool_call"
    config = make_config(
        openai_model("a", fake_a), openai_model("b", fake_b), tool_call_streaming="fragments"
    )
    client = await sluice(config)
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("f1", tools=TOOLS))
        frames = (await collect(ws, 1))["f1"]
    names = [f["error"]["name"] for f in frames if f["type"] == "error"]
    assert names == ["model_unavailable"]  # the partial call is dropped, the answer restarts
    reset = next(i for i, f in enumerate(frames) if f["type"] == "error")
    assert any(f["chunk"]["model_response"]["message"].get("tool_calls") for f in frames[:reset])
    fragments = calls_of(frames)
    assert fragments[0]["id"] == "call_b" and fragments[0]["function"]["name"] == "lookup"
    assert "id" not in fragments[1]
    joined = "".join(f["function"]["arguments"] for f in fragments)
    assert json.loads(joined) == {"q": "second"}
    assert frames[-1]["chunk"]["finish_detail"] == "tool_calls"


async def test_glide_http_chat_carries_tool_calls(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    _script(fake_a, ("call_1", '{"q": "x"}'), ("call_2", '{"q": "y"}'))
    client = await sluice(make_config(openai_model("a", fake_a)))
    resp = await client.post(
        "/v1/language/r/chat",
        json={"message": {"role": "user", "content": "find"}, "tools": TOOLS},
    )
    assert resp.status == 200
    body = await resp.json()
    ChatResponse.model_validate(body)
    answer = body["model_response"]
    assert answer["finish_reason"] == "other" and answer["finish_detail"] == "tool_calls"
    assert answer["message"]["content"] == ""
    assert [c["id"] for c in answer["message"]["tool_calls"]] == ["call_1", "call_2"]
    assert [c["index"] for c in answer["message"]["tool_calls"]] == [0, 1]


async def test_a_glide_request_without_tools_sees_no_change(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    _script(fake_a, ("call_1", "{}"))  # the model could call tools, but none are offered
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("g1"))
        frames = (await collect(ws, 1))["g1"]
    resp = await client.post(
        "/v1/language/r/chat", json={"message": {"role": "user", "content": "hi"}}
    )
    body = await resp.json()
    assert text_of(frames) == "Hello from fake"
    for frame in frames:
        chunk = frame["chunk"]
        assert set(chunk["model_response"]["message"]) == {"role", "content"}
        assert "finish_detail" not in chunk and "finish_detail" not in chunk["model_response"]
        assert chunk.get("finish_reason", "complete") in GLIDE_REASONS
    assert set(body["model_response"]["message"]) == {"role", "content"}
    assert "finish_detail" not in body["model_response"]
    assert fake_a.stats.last_body is not None and "tools" not in fake_a.stats.last_body


async def test_capability_and_image_errors_end_only_that_request(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    model = openai_model("a", fake_a, capabilities={"tools": False})
    client = await sluice(make_config(model))
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nabc").decode()
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}
    bad = {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("no-tools", tools=TOOLS))
        await ws.send_str(
            json.dumps({"request_id": "bad", "message": {"role": "user", "content": [bad]}})
        )
        await ws.send_str(
            json.dumps(
                {
                    "request_id": "img",
                    "message": {"role": "user", "content": [{"type": "text", "text": "?"}, image]},
                }
            )
        )
        frames = await collect(ws, 3)
    refused = frames["no-tools"][-1]
    ErrorFrame.model_validate(refused)
    assert refused["error"]["name"] == "unsupported_capability"
    assert "tool calling" in refused["error"]["message"]
    assert frames["bad"][-1]["error"]["name"] == "invalid_image"
    assert "base64" in frames["bad"][-1]["error"]["message"]
    assert text_of(frames["img"]) == "Hello from fake"
    assert fake_a.stats.requests == 1
    assert fake_a.stats.last_body is not None
    content = fake_a.stats.last_body["messages"][0]["content"]
    assert content[1]["image_url"]["url"] == f"data:image/png;base64,{png}"
    resp = await client.post(
        "/v1/language/r/chat",
        json={"message": {"role": "user", "content": "x"}, "tools": TOOLS},
    )
    assert resp.status == 400
    assert (await resp.json())["name"] == "unsupported_capability"


async def test_a_failure_after_a_whole_call_was_sent_restarts_the_answer(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    # a sends call 0 whole, then breaks inside call 1: a continuation cannot carry
    # the call, so even this `continue` router restarts (the client drops call 0)
    _script(fake_a, ("a0", '{"q": "one"}'), ("a1", '{"q": "two"}'))
    fake_a.script.fault = "cut_in_tool_call"
    fake_a.script.fault_in_call = 1
    _script(fake_b, ("b0", '{"q": "one"}'), ("b1", '{"q": "two"}'))
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("r1", tools=TOOLS))
        frames = (await collect(ws, 1))["r1"]
    kinds = [f["type"] for f in frames]
    reset = kinds.index("error")
    assert frames[reset]["error"]["name"] == "model_unavailable"
    assert frames[reset]["error"]["model_id"] == "a"
    assert "tool calls" in frames[reset]["error"]["message"]
    before = calls_of(frames[:reset])
    assert [c["id"] for c in before] == ["a0"]  # only the whole call was sent
    assert [c["id"] for c in calls_of(frames)] == ["b0", "b1"]
    assert frames[-1]["chunk"]["model_id"] == "b"
