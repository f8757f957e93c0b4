"""The API documents: valid (offline validators), served, and true to real frames.

Real frames from end-to-end runs of chatStream, speak and listen go through
`protocol.schema`'s models (extra="forbid"), the models the AsyncAPI document is
generated from, so the document cannot drift from what the server sends.
"""

from __future__ import annotations

import asyncio
import copy
import json
from importlib import resources
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from openapi_spec_validator import validate as validate_openapi

from apidocs import ASYNCAPI_PATH, OPENAPI_PATH, build_asyncapi, build_openapi
from fakes.openai_server import FakeOpenAI
from fakes.stt_servers import run_fake_transcription
from protocol.messages import encode_binary
from protocol.schema import (
    BinaryAudioFrame,
    ChatResponse,
    GlideError,
    HealthResponse,
    ReadyResponse,
    RouterList,
    validate_server_frame,
)
from tests.conftest import MakeClient, collect, make_config, openai_model
from tests.listen_client import FAST_CLIENT, listen_config
from tests.listen_client import collect as collect_listen
from tests.listen_client import start as start_listen
from tests.speak_helpers import local_model, speak, speak_config, text_msg
from tests.speech_audio import silence, speech_16k, synthesize


def asyncapi_validator() -> jsonschema.Draft7Validator:
    """The official AsyncAPI 3.0.0 JSON Schema (draft-07), vendored in the package."""
    text = resources.files("apidocs").joinpath("schemas/asyncapi-3.0.0.json").read_text()
    schema = json.loads(text)
    assert schema["$schema"].startswith("http://json-schema.org/draft-07/schema")
    return jsonschema.Draft7Validator(schema)


def test_openapi_document_is_valid_openapi_3_1() -> None:
    document = build_openapi()
    assert document["openapi"] == "3.1.0"
    validate_openapi(document)
    paths = document["paths"]
    for path in (
        "/v1/language/{router}/chat",
        "/v1/language",
        "/v1/speech",
        "/v1/health",
        "/v1/ready",
        "/metrics",
        "/v1/chat/completions",
        "/v1/audio/speech",
        "/v1/audio/transcriptions",
    ):
        assert path in paths
    body = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatBody"}
    assert "messages" in document["components"]["schemas"]["ChatBody"]["properties"]


def test_asyncapi_document_is_valid_asyncapi_3_0() -> None:
    document = build_asyncapi()
    validator = asyncapi_validator()
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    assert {c["address"] for c in document["channels"].values()} == {
        "/v1/language/{router}/chatStream",
        "/v1/speech/{router}/speak",
        "/v1/speech/{router}/listen",
        "/v1/agent/{router}/converse",
    }
    # the validator does reject a broken document
    broken = copy.deepcopy(document)
    broken["operations"]["speak.send"]["action"] = "publish"
    assert not validator.is_valid(broken)
    schemas = document["components"]["schemas"]
    assert {"ChatRequest", "SpeakRequestIn", "ListenRequestIn", "VADConfig"} <= set(schemas)
    assert {"ConverseRequestIn", "ReplyInterruptedFrame", "TurnEndedFrame"} <= set(schemas)
    assert schemas["ChunkFrame"]["additionalProperties"] is False
    # the default server is where `sluice serve` listens out of the box
    assert document["servers"]["sluice"]["variables"]["host"]["default"] == "localhost:9099"


async def test_documents_are_served_at_stable_paths(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    for path, build in ((OPENAPI_PATH, build_openapi), (ASYNCAPI_PATH, build_asyncapi)):
        resp = await client.get(path)
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == json.loads(json.dumps(build()))
    HealthResponse.model_validate(await (await client.get("/v1/health")).json())
    ReadyResponse.model_validate(await (await client.get("/v1/ready")).json())
    RouterList.model_validate(await (await client.get("/v1/language")).json())
    chat = {"message": {"role": "user", "content": "Hi"}}
    resp = await client.post("/v1/language/r/chat", json=chat)
    assert resp.status == 200
    ChatResponse.model_validate(await resp.json())
    missing = await client.post("/v1/language/nope/chat", json=chat)
    assert missing.status == 404
    GlideError.model_validate(await missing.json())


def check_frames(endpoint: str, frames: list[dict[str, Any]]) -> set[str]:
    """Every frame through its model; the frame types seen."""
    for frame in frames:
        validate_server_frame(endpoint, frame)
    return {f["type"] for f in frames}


async def test_chat_stream_frames_match_the_models(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with client.ws_connect("/v1/language/r/chatStream") as ws:
        ok = {"id": "c1", "message": {"role": "user", "content": "Hi"}, "metadata": {"k": 1}}
        await ws.send_json(ok)
        await ws.send_json({"id": "c2", "message": {"role": "user"}})
        await ws.send_json({"id": "c3", "message": {"content": "x"}})
        await ws.send_json({"type": "cancel", "request_id": "c3"})
        by_id = await collect(ws, 3)
        await ws.send_str("not json")
        by_id[None] = [await _next_json(ws)]
    seen: set[str] = set()
    for frames in by_id.values():
        seen |= check_frames("chatStream", frames)
    assert seen == {"chunk", "error"}
    assert by_id[None][0]["request_id"] is None


async def _next_json(ws: ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is WSMsgType.TEXT
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def _read_until_terminal(
    ws: ClientWebSocketResponse, count: int
) -> tuple[list[dict[str, Any]], list[bytes]]:
    texts: list[dict[str, Any]] = []
    binaries: list[bytes] = []
    ended = 0
    while ended < count:
        msg = await asyncio.wait_for(ws.receive(), 20)
        if msg.type is WSMsgType.BINARY:
            binaries.append(msg.data)
            continue
        assert msg.type is WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        texts.append(frame)
        if "finish_reason" in frame or "finish_reason" in frame.get("error", {}):
            ended += 1
    return texts, binaries


@pytest.mark.slow
async def test_speak_frames_match_the_models(sluice: MakeClient) -> None:
    client = await sluice(speak_config(local_model()))
    async with client.ws_connect("/v1/speech/s/speak") as ws:
        await ws.send_str(speak("s1", "Hello there. ", format={"encoding": "wav"}))
        await ws.send_str(text_msg("s1", "How are you?", final=True))
        await ws.send_str(speak("s2", "x", format={"encoding": "aiff"}))
        await ws.send_str(speak("s3", "y", final="yes"))
        texts, binaries = await _read_until_terminal(ws, 3)
    assert check_frames("speak", texts) == {"segment", "done", "error"}
    assert binaries
    for data in binaries:
        assert BinaryAudioFrame.from_bytes(data).request_id == "s1"


@pytest.mark.slow
async def test_listen_frames_match_the_models(sluice: MakeClient) -> None:
    (audio,) = synthesize(["turn on the kitchen lights"]).values()
    pcm = silence(400).tobytes() + speech_16k(audio).tobytes() + silence(900).tobytes()
    async with run_fake_transcription() as fake:
        model = {
            "id": "cloud",
            "client": FAST_CLIENT,
            "openai": {"base_url": fake.url, "api_key": "sk-test-1234"},
        }
        client = await sluice(listen_config([model]))
        async with client.ws_connect("/v1/speech/speech/listen") as ws:
            await start_listen(ws, "l1", metadata={"m": "x"})
            chunk = 3200
            for i in range(0, len(pcm), chunk):
                await ws.send_bytes(encode_binary("l1", pcm[i : i + chunk]))
            await ws.send_json({"type": "end", "request_id": "l1"})
            await start_listen(ws, "l2", format={"encoding": "speex"})
            by_id = await collect_listen(ws, ["l1", "l2"])
    seen: set[str] = set()
    for frames in by_id.values():
        seen |= check_frames("listen", frames)
    assert seen == {"speech_started", "transcript", "speech_ended", "done", "error"}


def test_documents_carry_tools_and_images() -> None:
    openapi = build_openapi()["components"]["schemas"]
    asyncapi = build_asyncapi()["components"]["schemas"]
    for schemas in (openapi, asyncapi):
        request = schemas["ChatRequest"]["properties"]
        assert {"tools", "tool_choice", "parallel_tool_calls"} <= set(request)
        message = schemas["ChatMessageIn"]["properties"]
        assert {"tool_calls", "tool_call_id"} <= set(message)
        assert "image_url" in schemas["ContentPartIn"]["properties"]
        assert "tool_calls" in schemas["ChatMessageOut"]["properties"]
        assert "finish_detail" in schemas["ModelResponse"]["properties"]
    assert {"tools", "tool_choice", "parallel_tool_calls"} <= set(openapi["ChatBody"]["properties"])
    assert "finish_detail" in asyncapi["Chunk"]["properties"]
