"""Metrics and traces after a scripted run: names, labels and values asserted."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from fakes.openai_server import FakeOpenAI
from server import GATEWAY, build_app
from tests.conftest import MakeClient, collect, make_config, openai_model, receive_json
from tests.ops_helpers import Samples, scrape, value

URL = "/v1/language/r/chatStream"
A = {"endpoint": "chatStream", "router": "r", "model": "a", "provider": "openai"}
B = {**A, "model": "b"}


def chat(request_id: str) -> str:
    return json.dumps({"request_id": request_id, "message": {"content": "hi"}})


def names(samples: Samples) -> set[str]:
    return set(samples)


async def scripted_run(client: Any, fake_a: FakeOpenAI, fake_b: FakeOpenAI) -> Samples:
    """ok on a; a fails before output; a fails mid-stream; a cancel; a bad payload and
    a junk frame; a slow request (metrics scraped while it runs, returned), then
    cancelled; one HTTP chat; last, every model fails."""
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("ok"))
        await collect(ws, 1)
        fake_a.script.fault = "http_500"
        await ws.send_str(chat("silent"))
        await collect(ws, 1)
        fake_a.script.fault = "truncated"
        fake_a.script.fault_after_chunks = 2
        await ws.send_str(chat("mid"))
        await collect(ws, 1)
        fake_a.script.fault = "none"
        fake_a.script.chunks = ["tok"] * 100
        fake_a.script.delay = 0.02
        await ws.send_str(chat("cancel-me"))
        await receive_json(ws)
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "cancel-me"}))
        await collect(ws, 1)
        await ws.send_str(json.dumps({"request_id": "bad", "message": {"role": "robot"}}))
        await collect(ws, 1)
        await ws.send_str("{not json")
        await receive_json(ws)
        await ws.send_str(chat("open"))
        await receive_json(ws)
        during = await scrape(client)
        await ws.send_str(json.dumps({"type": "cancel", "request_id": "open"}))
        await collect(ws, 1)
        fake_a.script.delay = 0
        resp = await client.post("/v1/language/r/chat", json={"message": {"content": "hi"}})
        assert resp.status == 200
        fake_a.script.fault = fake_b.script.fault = "http_500"
        await ws.send_str(chat("all-fail"))
        await collect(ws, 1)
    return during


async def test_metrics_after_a_scripted_run(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = make_config(openai_model("a", fake_a, error_budget="3/m"), openai_model("b", fake_b))
    client = await sluice(config)
    during = await scripted_run(client, fake_a, fake_b)
    for _ in range(100):
        if not client.server.app[GATEWAY].sessions:
            break
        await asyncio.sleep(0.02)
    after = await scrape(client)

    expected = {
        "sluice_requests_total",
        "sluice_request_errors_total",
        "sluice_request_duration_seconds_bucket",
        "sluice_provider_attempts_total",
        "sluice_failovers_total",
        "sluice_time_to_first_chunk_seconds_bucket",
        "sluice_time_to_first_chunk_seconds_count",
        "sluice_chunk_interval_seconds_count",
        "sluice_chunk_latency_seconds_count",
        "sluice_rejections_total",
        "sluice_socket_closes_total",
        "sluice_frames_sent_total",
        "sluice_bytes_sent_total",
        "sluice_active_sockets",
        "sluice_active_requests",
        "sluice_http_requests_in_flight",
        "sluice_outbound_queue_bytes",
        "sluice_outbound_queue_max_bytes",
        "sluice_model_health",
        "sluice_draining",
    }
    assert expected <= names(after), expected - names(after)

    # requests by router, model, provider, endpoint and outcome
    total = "sluice_requests_total"
    assert value(after, total, **A, outcome="ok") == 1  # "ok"
    assert value(after, total, **B, outcome="ok") == 2  # "silent", "mid" (restarted on b)
    assert value(after, total, **A, outcome="cancelled") == 2  # "cancel-me", "open"
    assert value(after, total, endpoint="chatStream", model="", outcome="rejected") == 1
    assert value(after, total, endpoint="chatStream", outcome="error") == 1
    assert value(after, total, endpoint="chat", model="a", outcome="ok") == 1
    errors = "sluice_request_errors_total"
    assert value(after, errors, error="all_models_unavailable") == 1
    assert value(after, errors, error="payload_parse_error") == 1
    assert value(after, "sluice_rejections_total", reason="payload_parse_error") == 2

    # failovers and their causes
    fo = "sluice_failovers_total"
    assert value(after, fo, **A, category="transient", stage="before_output") == 2
    assert value(after, fo, **A, category="protocol", stage="mid_stream") == 1
    # "all-fail" runs two passes (max_retries 1); a sits out the second, unhealthy
    assert value(after, fo, **B, category="transient", stage="before_output") == 2
    attempts = "sluice_provider_attempts_total"
    assert value(after, attempts, **A, outcome="failure") == 3
    assert value(after, attempts, **A, outcome="abandoned") == 2
    assert value(after, attempts, **A, outcome="success") == 1
    assert value(after, attempts, **B, outcome="success") == 2
    assert value(after, attempts, **B, outcome="failure") == 2
    assert value(after, attempts, endpoint="chat", outcome="success") == 1

    # latency histograms
    # first chunks: "ok", "mid" (before its reset), "cancel-me", "open" on a; "silent" on b
    assert value(after, "sluice_time_to_first_chunk_seconds_count", **A) == 4
    assert value(after, "sluice_time_to_first_chunk_seconds_count", **B) == 1
    assert value(after, "sluice_chunk_interval_seconds_count", **A) > 0
    assert value(after, "sluice_chunk_latency_seconds_count", endpoint="chatStream") > 10

    # live state: one socket and one request open during the slow request
    live = {"endpoint": "chatStream", "router": "r"}
    assert value(during, "sluice_active_sockets", **live) == 1
    assert value(during, "sluice_active_requests", **live) == 1
    assert value(after, "sluice_active_sockets", **live) == 0
    assert value(after, "sluice_active_requests", **live) == 0
    assert value(after, "sluice_socket_closes_total", endpoint="chatStream", reason="client") == 1

    # provider health per model: a's budget of 3 errors is spent
    health = "sluice_model_health"
    assert value(after, health, **A, state="unhealthy") == 1
    assert value(after, health, **A, state="healthy") == 0
    assert value(after, health, **B, state="healthy") == 1
    assert value(after, "sluice_draining") == 0


async def test_metrics_can_be_turned_off(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    config = make_config(openai_model("a", fake_a))
    config = config.model_copy(
        update={"metrics": config.metrics.model_copy(update={"enabled": False})}
    )
    client = await sluice(config)
    resp = await client.get("/metrics")
    assert resp.status == 404


async def test_one_span_per_request_and_a_child_per_attempt(
    aiohttp_client: Any, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    config = make_config(openai_model("a", fake_a), openai_model("b", fake_b))
    client = await aiohttp_client(build_app(config, span_exporter=exporter))
    fake_a.script.fault = "http_500"
    async with client.ws_connect(URL) as ws:
        await ws.send_str(chat("traced"))
        await collect(ws, 1)
    resp = await client.post("/v1/language/r/chat", json={"message": {"content": "hi"}})
    assert resp.status == 200
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.parent is None]
    assert sorted(s.name for s in requests) == ["chat r", "chatStream r"]
    stream = next(s for s in requests if s.name == "chatStream r")
    assert stream.attributes is not None
    assert stream.attributes["sluice.request_id"] == "traced"
    assert stream.attributes["sluice.outcome"] == "ok"
    assert stream.attributes["sluice.model"] == "b"
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == stream.context.span_id
    ]
    assert [s.name for s in children] == ["attempt a", "attempt b"]
    failed, served = children
    assert failed.attributes is not None and served.attributes is not None
    assert failed.attributes["sluice.outcome"] == "failure"
    assert failed.attributes["sluice.category"] == "transient"
    assert failed.status.status_code.name == "ERROR"
    assert served.attributes["sluice.outcome"] == "success"
    assert all(s.context.trace_id == stream.context.trace_id for s in children)


def test_tracing_without_opentelemetry_fails_config_load_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from config import ConfigError
    from config.loader import parse_config

    real = importlib.util.find_spec

    def missing(name: str, *args: Any) -> Any:
        return None if name.startswith("opentelemetry") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    text = "tracing:\n  enabled: true\n  exporter: otlp\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(text, source="t.yaml")
    problem = str(raised.value)
    assert problem.startswith("t.yaml:1:") and "tracing: tracing is enabled" in problem
    assert "pip install 'sluice-gateway[otel]'" in problem
    assert parse_config("tracing:\n  enabled: false\n").tracing.enabled is False
