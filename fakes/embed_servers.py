"""A fake embedding server speaking every vendor's wire format, on 127.0.0.1.

One app answers each vendor's embedding path, so a test points any adapter's
`base_url` at it:

- OpenAI-compatible: `POST {root}/v1/embeddings` (Bearer key)
- Azure OpenAI: `POST {root}/openai/deployments/{name}/embeddings?api-version=` (`api-key`)
- Cohere v2: `POST {root}/v2/embed` (Bearer key, `input_type` required)
- Gemini: `POST {root}/v1beta/models/{model}:embedContent` / `:batchEmbedContents`
  (`x-goog-api-key`)
- Ollama: `POST {root}/api/embed`
- Bedrock InvokeModel: `POST {root}/model/{model id}/invoke` (SigV4 `Authorization`),
  Titan (`inputText`) or Cohere (`texts`) bodies by model id

Vectors are `fake_vector(text, dims)`: deterministic, so a test can check that
each vector belongs to its text (order kept across batches). Faults, from
`script.fault` (every request) or `script.faults` (one per request, in order):
`500`, `429` (with Retry-After `script.retry_after`), `401`, `400`,
`malformed` (a 200 that is not JSON), `wrong_count` (one vector short), `stall`
(no answer until the client goes away), `refuse` (the connection is closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.common import (
    FakeStats,
    RunningFake,
    cli_parser,
    fake_app,
    record_request,
    refuse,
    retry_after_headers,
    serve_app,
    serve_until_signalled,
    stall_until_client_gone,
)

FAULTS = ("none", "500", "429", "401", "400", "malformed", "wrong_count", "stall", "refuse")
VENDORS = ("openai", "azure", "cohere", "gemini", "ollama", "bedrock")


def fake_vector(text: str, dims: int) -> list[float]:
    """The fake's vector for `text`: `dims` floats in [-1, 1) from SHA-256 of the text."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for (value,) in struct.iter_unpack("<H", digest):
            out.append(value / 32768.0 - 1.0)
        counter += 1
    return out[:dims]


@dataclass
class FakeEmbedScript:
    """What the fake answers: vectors of `dims` values (a request's own dimension
    field wins), after `delay` seconds; faults as the module says."""

    dims: int = 8
    delay: float = 0.0
    fault: str = "none"
    faults: list[str] = field(default_factory=list)
    retry_after: str = "1"
    tokens_per_text: int = 3


@dataclass
class FakeEmbedStats(FakeStats):
    """What the fake has seen, plus the texts of each call and the vendors called."""

    batches: list[list[str]] = field(default_factory=list)
    vendors: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


FAKE_SCRIPT = web.AppKey("fake_embed_script", FakeEmbedScript)
FAKE_STATS = web.AppKey("fake_embed_stats", FakeEmbedStats)


def _error(status: int, message: str, script: FakeEmbedScript) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "code": status}},
        status=status,
        headers=retry_after_headers(status, script.retry_after),
    )


def _texts(vendor: str, path: str, body: Any) -> list[str] | None:
    if not isinstance(body, dict):
        return None
    if vendor in ("openai", "azure", "ollama"):
        raw = body.get("input")
        raw = [raw] if isinstance(raw, str) else raw
    elif vendor == "cohere":
        raw = body.get("texts")
    elif vendor == "gemini":
        if path.endswith(":batchEmbedContents"):
            requests = body.get("requests")
            if not isinstance(requests, list):
                return None
            raw = [r.get("content", {}).get("parts", [{}])[0].get("text") for r in requests]
        else:
            raw = [body.get("content", {}).get("parts", [{}])[0].get("text")]
    elif "inputText" in body:
        raw = [body["inputText"]]
    else:
        raw = body.get("texts")
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        return None
    return list(raw)


def _dims(vendor: str, body: dict[str, Any], script: FakeEmbedScript) -> int:
    keys = {
        "openai": "dimensions",
        "azure": "dimensions",
        "ollama": "dimensions",
        "cohere": "output_dimension",
        "bedrock": "dimensions",
    }
    if vendor == "gemini":
        first = body["requests"][0] if "requests" in body else body
        value = first.get("outputDimensionality")
    else:
        value = body.get(keys[vendor])
    return value if isinstance(value, int) and value > 0 else script.dims


def _authorized(vendor: str, request: web.Request) -> bool:
    headers = request.headers
    if vendor in ("openai", "cohere"):
        return headers.get("Authorization", "").startswith("Bearer ")
    if vendor == "azure":
        return bool(headers.get("api-key"))
    if vendor == "gemini":
        return bool(headers.get("x-goog-api-key"))
    if vendor == "bedrock":
        auth = headers.get("Authorization", "")
        return auth.startswith("AWS4-HMAC-SHA256 Credential=") and "X-Amz-Date" in headers
    return True


def _answer(vendor: str, path: str, texts: list[str], dims: int, tokens: int) -> dict[str, Any]:
    vectors = [fake_vector(t, dims) for t in texts]
    if vendor in ("openai", "azure"):
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return {
            "object": "list",
            "data": list(reversed(data)),  # clients must order by `index`
            "model": "fake-embed",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    if vendor == "cohere":
        return {
            "id": "fake",
            "embeddings": {"float": vectors},
            "texts": texts,
            "meta": {"billed_units": {"input_tokens": tokens}},
        }
    if vendor == "gemini":
        if path.endswith(":batchEmbedContents"):
            return {"embeddings": [{"values": v} for v in vectors]}
        return {"embedding": {"values": vectors[0]}}
    if vendor == "ollama":
        return {"model": "fake-embed", "embeddings": vectors, "prompt_eval_count": tokens}
    if len(texts) == 1 and "titan" in path:
        return {"embedding": vectors[0], "inputTextTokenCount": tokens}
    return {"id": "fake", "embeddings": vectors, "response_type": "embeddings_floats"}


def _handler(vendor: str) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        script = request.app[FAKE_SCRIPT]
        stats = request.app[FAKE_STATS]
        _, body = await record_request(request, stats)
        stats.vendors.append(vendor)
        fault = script.faults.pop(0) if script.faults else script.fault
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            if script.delay:
                await asyncio.sleep(script.delay)
            if fault == "refuse":
                return refuse(request)
            if fault == "stall":
                await stall_until_client_gone(request)
                return web.Response()
            if fault in ("500", "429", "401", "400"):
                return _error(int(fault), f"injected {fault}", script)
            if not _authorized(vendor, request):
                return _error(401, "missing or malformed credentials", script)
            texts = _texts(vendor, request.path, body)
            if texts is None or not isinstance(body, dict):
                return _error(400, "no texts in the body", script)
            if vendor == "cohere" and not body.get("input_type"):
                return _error(400, "input_type is required", script)
            stats.batches.append(texts)
            stats.notify()
            if fault == "malformed":
                return web.Response(text="{not json", content_type="application/json")
            tokens = script.tokens_per_text * len(texts)
            answer = _answer(vendor, request.path, texts, _dims(vendor, body, script), tokens)
            if fault == "wrong_count":
                _drop_one(vendor, answer)
            return web.json_response(answer)
        finally:
            stats.in_flight -= 1

    return handle


def _drop_one(vendor: str, answer: dict[str, Any]) -> None:
    if "data" in answer:
        answer["data"].pop()
    elif vendor == "cohere":
        answer["embeddings"]["float"].pop()
    elif "embeddings" in answer:
        answer["embeddings"].pop()
    elif "embedding" in answer:
        answer["embedding"] = {"values": []} if vendor == "gemini" else []


def make_fake_embed_app(script: FakeEmbedScript | None = None) -> web.Application:
    """A fresh fake app with its own script and stats."""
    app = fake_app(FAKE_SCRIPT, script or FakeEmbedScript(), FAKE_STATS, FakeEmbedStats())
    app.router.add_post("/v1/embeddings", _handler("openai"))
    app.router.add_post("/openai/deployments/{deployment}/embeddings", _handler("azure"))
    app.router.add_post("/v2/embed", _handler("cohere"))
    app.router.add_post("/v1beta/models/{call}", _handler("gemini"))
    app.router.add_post("/api/embed", _handler("ollama"))
    app.router.add_post("/model/{model}/invoke", _handler("bedrock"))
    return app


@dataclass(frozen=True)
class FakeEmbed(RunningFake[FakeEmbedScript, FakeEmbedStats]):
    """A running fake: `url` is its root (`http://127.0.0.1:PORT`)."""

    script_key = FAKE_SCRIPT
    stats_key = FAKE_STATS


@asynccontextmanager
async def run_fake_embed(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeEmbedScript | None = None
) -> AsyncIterator[FakeEmbed]:
    """Serve the fake on `host:port` (0 picks a free port) for the `async with` body."""
    app = make_fake_embed_app(script)
    async with serve_app(app, host, port) as root:
        yield FakeEmbed(url=root, app=app)


def main(argv: list[str] | None = None) -> None:
    """Command line entry: parse flags, serve until SIGINT/SIGTERM."""
    parser = cli_parser(
        "Fake embedding server (every vendor's format)", port=9500, faults=FAULTS, unit="vector"
    )
    args = parser.parse_args(argv)
    script = FakeEmbedScript(delay=args.delay, fault=args.fault)
    serve_until_signalled(
        lambda: run_fake_embed(host=args.host, port=args.port, script=script), "embeddings"
    )


if __name__ == "__main__":
    main()
