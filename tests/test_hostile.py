"""Hostile input: every case gets its typed error or close code, the socket keeps
serving other requests where it should, and memory returns near its baseline.

Property-based (hypothesis): the frame parsers and request validation never
raise on any input; random sequences of junk, malformed JSON, wrong types,
binary frames, cancels and valid requests on one socket never break it. Then
named cases: deep nesting, huge strings, wrong types, binary frames on the chat
endpoint, bad binary headers, unknown and reused ids, 10,000 requests on one
socket, and clients that never read.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tracemalloc
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from config.models import SluiceConfig
from pipelines.common import Admission, describe_validation_error
from protocol.chat import ChatRequest
from protocol.frames import ErrorName
from protocol.messages import (
    MAX_JSON_DEPTH,
    BadMessage,
    ClientMessage,
    encode_binary,
    parse_binary,
    parse_text,
)
from server import GATEWAY, build_app
from tests.conftest import collect, is_terminal, receive_json, text_of
from tests.ops_helpers import ScriptedProvider, scripted_config, scripted_factory, with_sections
from tests.test_limits import NeverReads, wait_until

URL = "/v1/language/r/chatStream"
KNOWN_ERRORS = {v for k, v in vars(ErrorName).items() if k.isupper()} | {"cancelled"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
request_ids = st.sampled_from(["a", "b", "c", "reused"]) | st.text(min_size=0, max_size=140)


def nested(depth: int) -> Any:
    """A list nested `depth` levels deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def chat(request_id: str, text: str = "hi", **extra: Any) -> str:
    body = {"request_id": request_id, "message": {"content": text}, **extra}
    return json.dumps(body, ensure_ascii=False)


# ---- properties of the parsers -----------------------------------------------------


@given(st.text())
def test_parse_text_never_raises_on_any_text(raw: str) -> None:
    msg = parse_text(raw, "chat")
    assert isinstance(msg, ClientMessage | BadMessage)


@given(json_values, request_ids)
def test_parse_text_types_everything_it_accepts(value: Any, request_id: str) -> None:
    for raw in (json.dumps(value), json.dumps({"request_id": request_id, "x": value})):
        msg = parse_text(raw, "chat")
        if isinstance(msg, ClientMessage):
            assert isinstance(msg.request_id, str) and 1 <= len(msg.request_id) <= 128
            assert isinstance(msg.type, str)
            assert msg.metadata is None or isinstance(msg.metadata, dict)
        else:
            assert msg.name in KNOWN_ERRORS


@given(st.binary(max_size=400))
def test_parse_binary_never_raises(data: bytes) -> None:
    msg = parse_binary(data)
    if isinstance(msg, ClientMessage):
        assert msg.type == "audio" and msg.audio is not None
    else:
        assert msg.request_id is None and msg.name == ErrorName.INVALID_REQUEST


@given(st.text(min_size=1, max_size=32), st.binary(max_size=64))
def test_binary_frames_round_trip(request_id: str, audio: bytes) -> None:
    if len(request_id.encode()) > 128:
        return
    msg = parse_binary(encode_binary(request_id, audio))
    assert isinstance(msg, ClientMessage)
    assert msg.request_id == request_id and msg.audio == audio


@given(
    st.dictionaries(
        st.sampled_from(
            ["message", "message_history", "override_params", "override", "messageHistory"]
        ),
        json_values,
    )
)
def test_chat_request_validation_fails_only_with_validation_errors(body: dict[str, Any]) -> None:
    try:
        ChatRequest.model_validate(body)
    except ValidationError as error:
        text = describe_validation_error(error)
        assert text.startswith("invalid request: ")


@given(json_values)
def test_admission_never_raises_on_any_metadata(metadata: Any) -> None:
    admission = Admission(4, max_metadata_bytes=64)
    admit = admission.admit_frame("r", lambda: 0.0)
    body = {"request_id": "x", "metadata": metadata}
    refusal = admit(ClientMessage("x", "chat", body), 0)
    assert refusal is None or refusal.terminal


def test_nesting_deeper_than_the_limit_is_refused_with_the_request_id() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = {"k": deep}
    msg = parse_text(json.dumps({"request_id": "deep", "metadata": deep}), "chat")
    assert isinstance(msg, BadMessage) and msg.request_id == "deep"
    assert msg.name == ErrorName.INVALID_REQUEST
    ok = parse_text(json.dumps({"request_id": "ok", "metadata": {"a": [[{"b": 1}]]}}), "chat")
    assert isinstance(ok, ClientMessage)
    huge = parse_text("[" * 200_000 + "]" * 200_000, "chat")  # json's recursion limit
    assert isinstance(huge, BadMessage) and huge.name == ErrorName.PAYLOAD_PARSE_ERROR


# ---- a server per scenario -----------------------------------------------------------


async def serving(
    provider: ScriptedProvider, config: SluiceConfig | None = None
) -> TestClient[Any, Any]:
    app = build_app(config or scripted_config(), provider_factory=scripted_factory(provider))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def read_until(
    ws: ClientWebSocketResponse, done: Callable[[dict[str, Any]], bool], within: float = 10
) -> list[dict[str, Any]]:
    """Every frame up to and including the first that `done` accepts."""
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        msg = await asyncio.wait_for(ws.receive(), max(0.01, deadline - loop.time()))
        assert msg.type is WSMsgType.TEXT, f"socket ended: {msg}"
        frame = json.loads(msg.data)
        frames.append(frame)
        if done(frame):
            return frames


hostile_frames = st.lists(
    st.one_of(
        request_ids.map(lambda rid: ("text", chat(rid))),
        request_ids.map(lambda rid: ("text", json.dumps({"type": "cancel", "request_id": rid}))),
        st.text(max_size=200).map(lambda t: ("text", t)),
        json_values.map(lambda v: ("text", json.dumps(v))),
        st.tuples(request_ids, json_values).map(
            lambda p: ("text", json.dumps({"request_id": p[0], "message": p[1], "type": p[1]}))
        ),
        st.tuples(request_ids, json_values).map(
            lambda p: (
                "text",
                json.dumps({"id": p[0], "metadata": p[1], "message": {"content": "x"}}),
            )
        ),
        st.binary(max_size=60).map(lambda b: ("binary", b)),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_frames)
def test_random_frame_sequences_never_break_the_socket(frames: list[tuple[str, Any]]) -> None:
    asyncio.run(_random_frames(frames))


async def _random_frames(sent: list[tuple[str, Any]]) -> None:
    provider = ScriptedProvider(chunks=["ok"])
    client = await serving(provider)
    try:
        async with client.ws_connect(URL) as ws:
            for kind, data in sent:
                if kind == "text":
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
            await ws.send_str(chat("sentinel-9f1"))
            frames = await read_until(
                ws, lambda f: f["request_id"] == "sentinel-9f1" and is_terminal(f)
            )
        # every frame is a well-formed envelope with a known error name
        for frame in frames:
            assert frame["type"] in ("chunk", "error")
            assert frame["id"] == frame["request_id"]
            if frame["type"] == "error":
                assert frame["error"]["name"] in KNOWN_ERRORS, frame
        # at most one terminal frame per message that could have started a request
        sent_ids: dict[str, int] = {}
        for kind, data in sent:
            parsed = parse_text(data, "chat") if kind == "text" else parse_binary(data)
            if parsed.request_id is not None:
                sent_ids[parsed.request_id] = sent_ids.get(parsed.request_id, 0) + 1
        ended: dict[str, int] = {}
        for frame in frames:
            if frame["request_id"] is not None and is_terminal(frame):
                ended[frame["request_id"]] = ended.get(frame["request_id"], 0) + 1
        for request_id, count in ended.items():
            if request_id != "sentinel-9f1":
                assert count <= sent_ids.get(request_id, 0), request_id
        assert text_of([f for f in frames if f["request_id"] == "sentinel-9f1"]) == "ok"
    finally:
        await client.close()


# ---- named cases ---------------------------------------------------------------------


async def test_malformed_json_wrong_types_and_huge_strings_get_typed_errors() -> None:
    provider = ScriptedProvider(chunks=["fine"])
    client = await serving(provider)
    cases: list[tuple[str, str | None, str, bool]] = [
        # (frame, request id in the answer, error name, terminal)
        ('{"request_id": "t1", "message": {"content": "x"}', None, "payload_parse_error", False),
        ("[1, 2, 3]", None, "payload_parse_error", False),
        ('"just a string"', None, "payload_parse_error", False),
        ("", None, "payload_parse_error", False),
        ('{"request_id": 42, "message": {"content": "x"}}', None, "invalid_request", False),
        ('{"request_id": "", "message": {"content": "x"}}', None, "invalid_request", False),
        (chat("x" * 129), None, "invalid_request", False),
        (chat("x" * 500_000), None, "invalid_request", False),
        ('{"request_id": "t2", "type": 7}', "t2", "invalid_request", True),
        (
            '{"request_id": "t3", "metadata": "no", "message": {"content": "x"}}',
            "t3",
            "invalid_request",
            True,
        ),
        (
            '{"request_id": "t4", "message": ["not", "an", "object"]}',
            "t4",
            "payload_parse_error",
            True,
        ),
        ('{"request_id": "t5", "message": {"content": 12}}', "t5", "payload_parse_error", True),
        ('{"request_id": "t6", "message": {"content": ""}}', "t6", "payload_parse_error", True),
        (
            '{"request_id": "t7", "message": {"content": "x"}, "message_history": {"a": 1}}',
            "t7",
            "payload_parse_error",
            True,
        ),
        (
            '{"request_id": "t8", "message": {"content": "x"}, "override_params": [1]}',
            "t8",
            "payload_parse_error",
            True,
        ),
        (
            '{"request_id": "t9", "type": "speak", "text": "hi"}',
            "t9",
            "unsupported_message_type",
            True,
        ),
        (chat("t10", metadata={"blob": "m" * 20_000}), "t10", "metadata_too_large", True),
        (
            json.dumps(
                {
                    "request_id": "t11",
                    "message": {"content": "x"},
                    "override_params": {"m": {"temperature": nested(MAX_JSON_DEPTH + 5)}},
                }
            ),
            "t11",
            "invalid_request",
            True,
        ),
    ]
    try:
        async with client.ws_connect(URL) as ws:
            for raw, request_id, name, terminal in cases:
                await ws.send_str(raw)
                frame = await receive_json(ws)
                assert frame["request_id"] == request_id, (raw[:80], frame)
                assert frame["error"]["name"] == name, (raw[:80], frame)
                assert ("finish_reason" in frame["error"]) is terminal, (raw[:80], frame)
            # a huge but legal message is served (the content goes to the provider)
            await ws.send_str(chat("big", "y" * 900_000))
            assert text_of((await collect(ws, 1))["big"]) == "fine"
            await ws.send_str(chat("after"))
            assert text_of((await collect(ws, 1))["after"]) == "fine"
        resp = await client.post("/v1/language/r/chat", data="[" * 50_000)
        assert resp.status == 400 and (await resp.json())["name"] == "payload_parse_error"
        deep = {"message": {"content": "x"}, "override_params": {"m": {"p": nested(100)}}}
        resp = await client.post("/v1/language/r/chat", json=deep)
        assert resp.status == 400 and (await resp.json())["name"] == "invalid_request"
        resp = await client.post("/v1/language/r/chat", json=[1, 2])
        assert resp.status == 400 and (await resp.json())["name"] == "payload_parse_error"
    finally:
        await client.close()
    assert provider.opened == 2  # only the two valid requests reached the provider


async def test_binary_frames_and_bad_headers_on_the_chat_endpoint() -> None:
    provider = ScriptedProvider(chunks=["a"] * 20, delay=0.01)
    client = await serving(provider)
    try:
        async with client.ws_connect(URL) as ws:
            for bad in (b"", b"\x00", b"\x00abc", b"\xc8" + b"x" * 10, b"\x05ab", b"\x02\xff\xfe"):
                await ws.send_bytes(bad)
                frame = await receive_json(ws)
                assert frame["request_id"] is None
                assert frame["error"]["name"] == "invalid_request"
                assert "finish_reason" not in frame["error"]
            # audio for an id that is not active: a request chat cannot start
            await ws.send_bytes(encode_binary("ghost", b"\x00\x01"))
            (frame,) = (await collect(ws, 1))["ghost"]
            assert frame["error"]["name"] == "unsupported_message_type"
            # audio for an active chat request: refused, the request goes on
            await ws.send_str(chat("live"))
            await receive_json(ws)
            await ws.send_bytes(encode_binary("live", b"\x00\x01"))
            frames = (await collect(ws, 1))["live"]
            notices = [f for f in frames if f["type"] == "error"]
            assert [n["error"]["name"] for n in notices] == ["duplicate_request_id"]
            assert text_of(frames).endswith("a" * 10)
    finally:
        await client.close()


async def test_unknown_and_reused_request_ids() -> None:
    provider = ScriptedProvider(chunks=["p", "q"], delay=0.02)
    client = await serving(provider)
    try:
        async with client.ws_connect(URL) as ws:
            await ws.send_str(json.dumps({"type": "cancel", "request_id": "never-seen"}))
            await ws.send_str(json.dumps({"type": "end", "request_id": "never-seen-2"}))
            (frame,) = (await collect(ws, 1))["never-seen-2"]  # the cancel was a no-op
            assert frame["error"]["name"] == "unsupported_message_type"
            await ws.send_str(chat("same"))
            await ws.send_str(chat("same"))
            frames = (await collect(ws, 1))["same"]
            assert [f["error"]["name"] for f in frames if f["type"] == "error"] == [
                "duplicate_request_id"
            ]
            await ws.send_str(chat("same"))  # finished: usable again
            assert text_of((await collect(ws, 1))["same"]) == "pq"
            await ws.send_str(json.dumps({"type": "cancel", "request_id": "same"}))
            await ws.send_str(chat("other"))
            assert text_of((await collect(ws, 1))["other"]) == "pq"
            # a cancel right behind its request (same read from the socket) is not lost
            await ws.send_str(chat("quick"))
            await ws.send_str(json.dumps({"type": "cancel", "request_id": "quick"}))
            (frame,) = (await collect(ws, 1))["quick"]
            assert frame["error"]["name"] == "cancelled"
    finally:
        await client.close()
    assert provider.opened in (3, 4)  # "quick" may be cancelled before its stream starts
    assert provider.open_streams == 0


def traced_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def rss_bytes() -> int:
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_ten_thousand_requests_on_one_socket() -> None:
    """10,000 requests through one socket, 200 in flight at a time (tracemalloc would
    slow this fourfold: memory is judged by live objects and RSS instead)."""
    provider = ScriptedProvider(chunks=["one", " two", " three"])
    client = await serving(provider)
    total, window = 10_000, 200
    try:
        async with client.ws_connect(URL) as ws:
            for i in range(window):  # warm up at full concurrency once
                await ws.send_str(chat(f"warm{i}"))
            await collect(ws, window, within=30)
            objects, rss = live_objects(), rss_bytes()
            peak_rss = rss
            sent = ended = 0
            texts: dict[str, str] = {}
            while ended < total:
                while sent < total and sent - ended < window:
                    await ws.send_str(chat(f"r{sent}"))
                    sent += 1
                frame = await receive_json(ws, 10)
                rid = frame["request_id"]
                if frame["type"] == "chunk":
                    content = frame["chunk"]["model_response"]["message"]["content"]
                    texts[rid] = texts.get(rid, "") + content
                if is_terminal(frame):
                    ended += 1
                    assert texts.pop(rid) == "one two three", rid
                    if ended % 500 == 0:
                        peak_rss = max(peak_rss, rss_bytes())
            extra_objects = live_objects() - objects
            extra_rss = rss_bytes() - rss
            # the socket still serves
            await ws.send_str(chat("last"))
            assert text_of((await collect(ws, 1))["last"]) == "one two three"
    finally:
        await client.close()
    assert provider.opened == total + window + 1
    assert extra_objects < 2000, extra_objects  # nothing per request is left behind
    assert extra_rss < 64 << 20, extra_rss
    print(
        f"10,000 requests: peak RSS +{(peak_rss - rss) >> 20} MiB, after +{extra_rss >> 20} MiB,"
        f" {extra_objects:+d} live objects"
    )


async def test_many_clients_that_never_read_leave_nothing_behind() -> None:
    provider = ScriptedProvider(endless=True, chunk_text="w" * 2000)
    limits = {"max_queued_bytes_per_socket": 128 << 10, "slow_consumer_close_timeout": "300ms"}
    config = with_sections(scripted_config(), limits=limits)
    client = await serving(provider, config)
    gateway = client.server.app[GATEWAY]
    tracemalloc.start()
    try:
        async with client.ws_connect(URL) as ws:
            provider.endless = False
            await ws.send_str(chat("warm"))
            await collect(ws, 1)
        await wait_until(lambda: not gateway.sessions, 5)
        baseline = traced_now()
        tracemalloc.reset_peak()
        provider.endless = True
        stuck = [await NeverReads.connect(client.host, client.port, URL) for _ in range(8)]
        for n, sock in enumerate(stuck):
            for i in range(3):
                await sock.send_text(chat(f"s{n}-{i}"))
        await wait_until(lambda: provider.opened >= 1 + 24, 5)
        took = await wait_until(lambda: not gateway.sessions, 15)
        await wait_until(lambda: provider.open_streams == 0, 5)
        peak = tracemalloc.get_traced_memory()[1] - baseline
        after = traced_now()
        for sock in stuck:
            sock.close()
        # the server still serves
        provider.endless = False
        async with client.ws_connect(URL) as ws:
            await ws.send_str(chat("alive"))
            assert text_of((await collect(ws, 1))["alive"]) == "Hello there"
    finally:
        tracemalloc.stop()
        await client.close()
    assert took < 10
    assert after - baseline < 1 << 20, (baseline, after)
    print(f"8 never-reading clients cut in {took:.2f}s; peak +{peak >> 10} KiB")
