"""Resume against one instance (the in-memory request log): a client loses its socket
mid-answer, reconnects, sends `resume` with the last `seq` it saw, and gets the rest."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType

from fakes.openai_server import FakeOpenAI
from security.keys import hash_key
from tests.conftest import MakeClient, collect, is_terminal, make_config, openai_model, receive_json
from tests.ops_helpers import with_sections
from tests.speak_helpers import local_model, speak, speak_config

URL = "/v1/language/r/chatStream"
WORDS = [f"w{i} " for i in range(40)]
GOOD = "sk-sluice-good-key-0123456789"
OTHER = "sk-sluice-other-key-0123456789"


def chat(request_id: str, text: str = "hi") -> str:
    return json.dumps({"request_id": request_id, "message": {"role": "user", "content": text}})


def resume(request_id: str, after_seq: int) -> str:
    return json.dumps({"type": "resume", "request_id": request_id, "after_seq": after_seq})


def drop(ws: ClientWebSocketResponse) -> None:
    """Lose the connection the way a network does: no close frame, just gone."""
    sock = ws.get_extra_info("socket")
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)


def content(frames: list[dict[str, Any]]) -> str:
    return "".join(
        f["chunk"]["model_response"]["message"]["content"] for f in frames if f["type"] == "chunk"
    )


async def test_every_frame_carries_seq_from_one_and_the_terminal_counts(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["a", "b", "c"]
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("s1"))
        await ws.send_str(chat("s2"))
        frames = await collect(ws, 2)
    for request_id in ("s1", "s2"):
        got = frames[request_id]
        assert [f["seq"] for f in got] == list(range(1, len(got) + 1))
        assert is_terminal(got[-1])


async def test_a_lost_socket_is_resumed_after_the_last_seq_seen(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = WORDS
    fake_a.script.delay = 0.02
    client = await sluice(make_config(openai_model("a", fake_a)))
    ws = await client.ws_connect(URL)
    await ws.send_str(chat("r1"))
    await ws.send_str(chat("r2"))
    seen: dict[str, list[dict[str, Any]]] = {"r1": [], "r2": []}
    while len(seen["r1"]) < 5 or len(seen["r2"]) < 3:
        frame = await receive_json(ws)
        seen[frame["request_id"]].append(frame)
    drop(ws)
    await ws.close()

    async with client.ws_connect(URL) as again:
        for request_id, frames in seen.items():
            await again.send_str(resume(request_id, frames[-1]["seq"]))
        rest = await collect(again, 2)
    for request_id, frames in seen.items():
        whole = frames + rest[request_id]
        assert [f["seq"] for f in whole] == list(range(1, len(whole) + 1))
        assert content(whole) == "".join(WORDS)
        assert sum(1 for f in whole if is_terminal(f)) == 1 and is_terminal(whole[-1])


async def test_resume_of_a_finished_request_replays_from_after_seq(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["x", "y", "z"]
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("f1"))
        first = (await collect(ws, 1))["f1"]
        await ws.send_str(resume("f1", 1))
        again = (await collect(ws, 1))["f1"]
        assert again == first[1:]
        await ws.send_str(resume("f1", 0))
        assert (await collect(ws, 1))["f1"] == first


async def test_a_bad_or_unknown_resume_is_a_typed_error_and_the_socket_lives(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect(URL) as ws:
        await ws.send_str(resume("never", 0))
        err = await receive_json(ws)
        assert err["error"]["name"] == "request_not_found"
        assert err["error"]["finish_reason"] == "error" and "seq" not in err
        await ws.send_str(json.dumps({"type": "resume", "request_id": "x", "after_seq": -1}))
        err = await receive_json(ws)
        assert err["error"]["name"] == "invalid_request"
        await ws.send_str(chat("ok"))
        assert content((await collect(ws, 1))["ok"]) == "Hello from fake"


async def test_another_keys_request_is_invisible(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    fake_a.script.chunks = ["secret"]
    keys = [{"id": "good", "hash": hash_key(GOOD)}, {"id": "other", "hash": hash_key(OTHER)}]
    client = await sluice(
        with_sections(make_config(openai_model("a", fake_a)), auth={"keys": keys})
    )
    good = {"Authorization": f"Bearer {GOOD}"}
    other = {"Authorization": f"Bearer {OTHER}"}
    async with client.ws_connect(URL, headers=good) as ws:
        await ws.send_str(chat("k1"))
        await collect(ws, 1)
    async with client.ws_connect(URL, headers=other) as ws:
        await ws.send_str(resume("k1", 0))
        err = await receive_json(ws)
        assert err["error"]["name"] == "request_not_found"
    async with client.ws_connect(URL, headers=good) as ws:
        await ws.send_str(resume("k1", 0))
        assert content((await collect(ws, 1))["k1"]) == "secret"


async def test_a_cancel_after_resume_reaches_the_running_request(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["tok"] * 200
    fake_a.script.delay = 0.05
    client = await sluice(make_config(openai_model("a", fake_a)))
    ws = await client.ws_connect(URL)
    await ws.send_str(chat("c1"))
    first = await receive_json(ws)
    drop(ws)
    await ws.close()
    async with client.ws_connect(URL) as again:
        await again.send_str(resume("c1", first["seq"]))
        await receive_json(again)
        await again.send_str(json.dumps({"type": "cancel", "request_id": "c1"}))
        frames = (await collect(again, 1))["c1"]
    assert frames[-1]["error"]["name"] == "cancelled"
    await fake_a.wait_stream_closed(within=2.0)


async def test_a_normal_close_still_cancels_the_requests(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["tok"] * 200
    fake_a.script.delay = 0.05
    client = await sluice(make_config(openai_model("a", fake_a)))
    ws = await client.ws_connect(URL)
    await ws.send_str(chat("n1"))
    await receive_json(ws)
    await ws.close()
    await fake_a.wait_stream_closed(within=2.0)
    async with client.ws_connect(URL) as again:
        await again.send_str(resume("n1", 1))
        err = await receive_json(again)
        assert err["error"]["name"] == "request_not_found"


async def test_speak_segments_name_the_seqs_of_their_audio_and_resume_replays_it(
    sluice: MakeClient,
) -> None:
    client = await sluice(speak_config(local_model()))
    speak_url = "/v1/speech/s/speak"
    text = "The first sentence. The second one follows."
    async with client.ws_connect(speak_url) as ws:
        await ws.send_str(speak("p1", text, final=True))
        frames: list[tuple[int | None, Any]] = []  # (seq of a text frame, frame)
        binary_seqs: list[int] = []
        seq = 0
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            seq += 1
            if msg.type is WSMsgType.BINARY:
                binary_seqs.append(seq)
                frames.append((None, msg.data))
                continue
            data = json.loads(msg.data)
            assert data["seq"] == seq
            frames.append((seq, data))
            if data["type"] == "done" or is_terminal(data):
                break
        segments = [d["segment"] for s, d in frames if s is not None and d["type"] == "segment"]
        assert len(segments) == 2
        covered = [
            n for seg in segments for n in range(seg["audio_seq"][0], seg["audio_seq"][1] + 1)
        ]
        assert covered == [n for n in binary_seqs if n < covered[-1] + 1]

        await ws.send_str(resume("p1", 2))
        replay = []
        while len(replay) < len(frames) - 2:
            msg = await asyncio.wait_for(ws.receive(), 10)
            replay.append(msg.data if msg.type is WSMsgType.BINARY else json.loads(msg.data))
    assert replay == [f for _, f in frames[2:]]
