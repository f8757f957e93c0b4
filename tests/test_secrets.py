"""Provider keys never leave Sluice: everything it writes during a run is grepped.

In process: a run with failing, leaking providers; every log line (through the
JSON formatter), every frame, every HTTP body, the router listings and the
metrics text are searched for the keys. Out of process: a real `sluice serve`
at debug level, with console tracing, whose whole stdout and stderr are searched.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from config.models import SluiceConfig
from fakes.openai_server import FakeOpenAI
from observability.logs import JsonFormatter
from providers.registry import build_chat_provider
from providers.types import ChatDelta, ChatParams, ErrorCategory, ProviderError
from security.redact import Redactor, config_secrets
from server import build_app
from serving.crashes import log_crashes
from tests.conftest import FAST_CLIENT, FAST_RETRY

ROOT = Path(__file__).resolve().parent.parent
OPENAI_KEY = "sk-test-SECRET-1234"
LEAKY_KEY = "LEAKY-provider-key-7f3a9c21"
SPEECH_KEY = "speech-provider-key-55aa01"


class LeakyProvider:
    """A provider whose every failure tries to leak its key (as careless code might)."""

    provider_id = "leaky"
    model_name = "leaky-1"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, params: ChatParams) -> AsyncIterator[ChatDelta]:
        """Fail in turn: a ProviderError, a RuntimeError, a mid-stream failure."""
        self.calls += 1
        kind = self.calls % 3
        if kind == 1:
            raise ProviderError(ErrorCategory.TRANSIENT, f"upstream said: bad key {LEAKY_KEY}")
        if kind == 2:
            raise RuntimeError(f"connect to https://user:{LEAKY_KEY}@upstream failed")
        yield ChatDelta("partial ")
        raise ValueError(f"stream broke; headers were Authorization: Bearer {LEAKY_KEY}")

    async def aclose(self) -> None:
        """Nothing to release."""


def leak_config(fake: FakeOpenAI) -> SluiceConfig:
    """Router r: the leaky model first, then a real OpenAI adapter on `fake`."""
    return SluiceConfig.model_validate(
        {
            "server": {"log_level": "debug"},
            "routers": {
                "language": [
                    {
                        "id": "r",
                        "retry": FAST_RETRY,
                        "models": [
                            {
                                "id": "leaky",
                                "error_budget": "1000/s",
                                "client": FAST_CLIENT,
                                "openai": {"base_url": fake.url, "api_key": LEAKY_KEY},
                            },
                            {
                                "id": "a",
                                "error_budget": "1000/s",
                                "client": FAST_CLIENT,
                                "openai": {"base_url": fake.url, "api_key": OPENAI_KEY},
                            },
                        ],
                    }
                ],
                "speech": [
                    {
                        "id": "s",
                        "speak": {
                            "models": [
                                {
                                    "id": "tts",
                                    "openai": {"base_url": fake.url, "api_key": SPEECH_KEY},
                                }
                            ]
                        },
                    }
                ],
            },
        }
    )


@contextmanager
def captured_logs(config: SluiceConfig) -> Iterator[io.StringIO]:
    """Every log line at debug level, formatted as `sluice serve` formats them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(Redactor(config_secrets(config))))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def assert_no_key(where: str, text: str) -> None:
    for key in (OPENAI_KEY, LEAKY_KEY, SPEECH_KEY):
        assert key not in text, f"a provider key leaked into {where}"


async def test_no_provider_key_in_anything_sluice_writes(
    aiohttp_client: Any, fake_a: FakeOpenAI
) -> None:
    config = leak_config(fake_a)
    with captured_logs(config) as out:
        written = await leaky_run(aiohttp_client, fake_a, config)
    logs = out.getvalue()
    assert "attempt failed" in logs and "uncaught exception" in logs
    everything = "\n".join(written)
    # the leak attempts reached the outputs, masked
    assert "***" in everything and "***" in logs
    assert_no_key("frames, HTTP bodies, listings or metrics", everything)
    assert_no_key("the logs", logs)


async def leaky_run(aiohttp_client: Any, fake_a: FakeOpenAI, config: SluiceConfig) -> list[str]:
    """Requests that fail every way the leaky provider can; everything Sluice answered."""
    leaky = LeakyProvider()

    def factory(model: Any, session: aiohttp.ClientSession) -> Any:
        return leaky if model.id == "leaky" else build_chat_provider(model, session)

    client = await aiohttp_client(build_app(config, provider_factory=factory))
    written: list[str] = []
    async with client.ws_connect("/v1/language/r/chatStream") as ws:
        for i in range(6):
            fake_a.script.fault = ["none", "http_401", "http_500", "malformed"][i % 4]
            body = {"request_id": f"q{i}", "message": {"content": "hi"}}
            await ws.send_str(json.dumps(body))
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type is WSMsgType.TEXT
                written.append(msg.data)
                frame = json.loads(msg.data)
                if "finish_reason" in frame.get("error", {}) or "finish_reason" in frame.get(
                    "chunk", {}
                ):
                    break
    for _ in range(2):
        resp = await client.post("/v1/language/r/chat", json={"message": {"content": "hi"}})
        written.append(await resp.text())
    for path in ("/v1/language/", "/v1/speech/", "/metrics", "/v1/health", "/v1/ready"):
        written.append(await (await client.get(path)).text())

    # a crash report goes through the same formatter
    old_hook = sys.excepthook
    log_crashes()
    try:
        try:
            raise RuntimeError(f"fatal: key {LEAKY_KEY} rejected")
        except RuntimeError as error:
            sys.excepthook(type(error), error, error.__traceback__)
    finally:
        sys.excepthook = old_hook
    assert leaky.calls >= 3
    return written


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_real_sluice_process_never_prints_a_provider_key(
    tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    tracing = importlib.util.find_spec("opentelemetry") is not None  # the `otel` extra
    port = _free_port()
    (tmp_path / "speech.key").write_text(SPEECH_KEY + "\n")
    config = tmp_path / "sluice.yaml"
    config.write_text(
        f"""
server:
  log_level: debug
tracing:
  enabled: {str(tracing).lower()}
  exporter: console
routers:
  language:
    - id: r
      retry: {{max_retries: 1, min_delay: 10ms, max_delay: 20ms}}
      models:
        - id: refused
          client: {{connect_timeout: 1s}}
          openai: {{base_url: "http://127.0.0.1:9/v1", api_key: "${{env:LEAKY_KEY}}"}}
        - id: a
          error_budget: 1000/s
          openai: {{base_url: "{fake_a.url}", api_key: "${{env:OPENAI_KEY}}"}}
  speech:
    - id: s
      speak:
        models:
          - id: tts
            openai: {{base_url: "{fake_a.url}", api_key: "${{file:speech.key}}"}}
"""
    )
    env = {"OPENAI_KEY": OPENAI_KEY, "LEAKY_KEY": LEAKY_KEY, "PATH": "/usr/bin:/bin"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "server.py"),
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    written: list[str] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"{base}/v1/ready") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("sluice serve did not become ready")
            async with http.ws_connect(f"{base}/v1/language/r/chatStream") as ws:
                for i, fault in enumerate(["none", "http_401", "http_500", "truncated"]):
                    fake_a.script.fault = fault  # type: ignore[assignment]
                    await ws.send_str(
                        json.dumps({"request_id": f"p{i}", "message": {"content": "hi"}})
                    )
                    while True:
                        msg = await asyncio.wait_for(ws.receive(), 15)
                        written.append(msg.data)
                        frame = json.loads(msg.data)
                        ended = frame.get("error", {}).get("finish_reason") or frame.get(
                            "chunk", {}
                        ).get("finish_reason")
                        if ended:
                            break
            for path in ("/v1/language/", "/v1/speech/", "/metrics"):
                async with http.get(base + path) as resp:
                    written.append(await resp.text())
            async with http.post(
                f"{base}/v1/language/r/chat", json={"message": {"content": "hi"}}
            ) as resp:
                written.append(await resp.text())
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    logs = stderr.decode()
    spans = stdout.decode()
    assert proc.returncode == 0, logs[-2000:]
    assert '"msg": "attempt failed"' in logs and '"request_id": "p1"' in logs
    assert "no client API keys configured" in logs  # said at start
    if tracing:
        assert '"name": "chatStream r"' in spans  # console spans were written
    assert_no_key("the process's stderr (logs)", logs)
    assert_no_key("the process's stdout (spans)", spans)
    assert_no_key("frames and HTTP bodies", "\n".join(written))
