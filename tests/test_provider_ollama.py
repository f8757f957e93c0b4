"""The Ollama adapter against the fake Ollama server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from config.models import ClientConfig, OllamaConfig
from fakes.ollama_server import MID_STREAM_ERROR, FakeOllama, run_fake_ollama
from providers.ndjson import JSONLinesReader
from providers.ollama import OllamaProvider
from providers.types import ChatDelta, ChatParams, ErrorCategory, Message, ProviderError, TokenUsage
from tests.provider_helpers import collect, stream_error


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with run_fake_ollama() as server:
        yield server


def ollama(fake: FakeOllama, session: aiohttp.ClientSession, **config: Any) -> OllamaProvider:
    settings: dict[str, Any] = {"base_url": f"{fake.url}/", "model": "llama-test"}
    settings.update(config)
    return OllamaProvider(OllamaConfig(**settings), ClientConfig(), session)


# --- streaming: the happy path -------------------------------------------------------


async def test_stream_yields_text_then_final_delta_with_usage(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    provider = ollama(fake, session)
    assert (provider.provider_id, provider.model_name) == ("ollama", "llama-test")
    deltas = await collect(provider)
    assert deltas == [
        ChatDelta("Hello"),
        ChatDelta(" from"),
        ChatDelta(" fake"),
        ChatDelta("", finish_reason="complete", usage=TokenUsage(7, 3, 10)),
    ]
    assert fake.stats.last_path == "/api/chat"
    assert fake.stats.streams_completed == 1


async def test_request_maps_params_into_options_and_sends_no_auth(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    provider = ollama(
        fake,
        session,
        default_params={"temperature": 0.1, "max_tokens": 10, "num_ctx": 4096, "stream": False},
    )
    params = ChatParams(
        messages=(Message("system", "be brief"), Message("user", "hi", name="ann")),
        params={
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "seed": 7,
            "stop": "\n\n",
            "repeat_penalty": 1.1,
            "keep_alive": "5m",
            "format": "json",
            "model": "other",
            "options": {"mirostat": 1},
        },
    )
    await collect(provider, params)
    assert fake.stats.last_body == {
        "model": "llama-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "stream": True,
        "keep_alive": "5m",
        "format": "json",
        "options": {
            "mirostat": 1,
            "temperature": 0.5,
            "num_predict": 10,
            "num_ctx": 4096,
            "top_p": 0.9,
            "top_k": 40,
            "seed": 7,
            "stop": ["\n\n"],
            "repeat_penalty": 1.1,
        },
    }
    assert "Authorization" not in fake.stats.last_headers
    assert fake.stats.last_headers["Accept"] == "application/x-ndjson"


async def test_no_params_means_no_options(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    await collect(ollama(fake, session))
    assert fake.stats.last_body is not None
    assert "options" not in fake.stats.last_body


@pytest.mark.parametrize(
    ("vendor", "ours"), [("stop", "complete"), ("length", "max_tokens"), ("load", "other")]
)
async def test_done_reason_mapping(
    fake: FakeOllama, session: aiohttp.ClientSession, vendor: Any, ours: str
) -> None:
    fake.script.done_reason = vendor
    deltas = await collect(ollama(fake, session))
    assert deltas[-1].finish_reason == ours


async def test_lines_split_across_reads_are_reassembled(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    fake.script.split_lines = True
    deltas = await collect(ollama(fake, session))
    assert [d.content for d in deltas] == ["Hello", " from", " fake", ""]


# --- streaming: faults ---------------------------------------------------------------


async def test_missing_model_keeps_ollamas_message(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "http_404"
    error, _ = await stream_error(ollama(fake, session))
    assert error.message == (
        'ollama/llama-test: model "llama-test" not found, try pulling it first'
    )


async def test_error_line_mid_stream_keeps_earlier_deltas(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "error_event"
    fake.script.fault_after_chunks = 2
    error, seen = await stream_error(ollama(fake, session))
    assert [d.content for d in seen] == ["Hello", " from"]
    assert error.message == f"ollama/llama-test: {MID_STREAM_ERROR}"


async def test_truncated_stream_says_why(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.script.fault = "truncated"
    error, seen = await stream_error(ollama(fake, session))
    assert [d.content for d in seen] == ["Hello"]
    assert error.message == "ollama/llama-test: stream ended before a done:true line"


async def test_error_object_in_a_200_body(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": "out of memory"})

    app = web.Application()
    app.router.add_post("/api/chat", handler)
    server = await aiohttp_server(app)
    config = OllamaConfig(base_url=str(server.make_url("")), model="m")
    with pytest.raises(ProviderError) as caught:
        await collect(OllamaProvider(config, ClientConfig(), session))
    assert caught.value.category is ErrorCategory.TRANSIENT
    assert caught.value.message == "ollama/m: out of memory"


# --- the NDJSON reader ------------------------------------------------------------------


async def test_json_lines_reader_handles_blank_lines_crlf_and_a_last_line_without_newline(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"a": 1}\r\n\n  \n{"b":')
        await resp.write(b' 2}\n{"c": 3}')
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    async with session.get(server.make_url("/")) as resp:
        reader = JSONLinesReader(resp.content, "x/y")
        seen = [await reader.next() for _ in range(4)]
    assert seen == [{"a": 1}, {"b": 2}, {"c": 3}, None]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]\n", "x/y: stream line is not a JSON object"),
        (b"\xff\xfe\n", "x/y: stream line is not UTF-8"),
        (b"x" * 64 + b"\n", "x/y: stream line longer than 16 bytes"),
    ],
)
async def test_json_lines_reader_rejects_bad_lines(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, body: bytes, message: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    async with session.get(server.make_url("/")) as resp:
        reader = JSONLinesReader(resp.content, "x/y", max_line_bytes=16)
        with pytest.raises(ProviderError) as caught:
            await reader.next()
    assert caught.value.category is ErrorCategory.PROTOCOL
    assert caught.value.message == message
