"""The command line and the embedded default config with the real local engine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from config import load_config
from server import main
from tests.conftest import MakeClient, collect, text_of

ROOT = Path(__file__).resolve().parent.parent


def test_check_config_accepts_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "routers:\n  language:\n    - id: r\n      models:\n"
        "        - id: a\n          openai:\n            api_key: ${env:SLUICE_TEST_KEY}\n"
    )
    os.environ["SLUICE_TEST_KEY"] = "sk-live-verysecret"
    try:
        assert main(["check-config", str(path)]) == 0
    finally:
        del os.environ["SLUICE_TEST_KEY"]
    assert "OK" in capsys.readouterr().out


def test_check_config_names_field_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "routers:\n  language:\n    - id: r\n      strategy: fastest\n      models:\n"
        "        - id: a\n          openai:\n            api_key: sk-live-verysecret\n"
        "            bas_url: http://x\n"
    )
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:4:" in err and "routers.language[0].strategy" in err
    assert "bad.yaml:9:" in err and "bas_url" in err
    assert "verysecret" not in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
async def test_sluice_serve_answers_chat_on_the_embedded_default() -> None:
    """`sluice serve` with no config: the local engine streams a real answer."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "server.py"),
        "serve",
        "--port",
        str(port),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    async with http.get(f"{base}/v1/health/") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("sluice serve did not come up")
            async with http.ws_connect(f"{base}/v1/language/default/chatStream") as ws:
                await ws.send_str(
                    json.dumps(
                        {
                            "request_id": "local-1",
                            "message": {"role": "user", "content": "Name a colour."},
                            "override_params": {"local-smollm2": {"max_tokens": 12}},
                        }
                    )
                )
                frames = await collect(ws, 1, within=30)
        got = frames["local-1"]
        assert got[-1]["type"] == "chunk", got[-1]
        assert got[-1]["chunk"]["finish_reason"] in ("complete", "max_tokens")
        assert got[-1]["chunk"]["provider_id"] == "local"
        assert text_of(got).strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0


@pytest.mark.slow
async def test_http_chat_on_the_embedded_default(sluice: MakeClient) -> None:
    client = await sluice(load_config(None))
    resp = await client.post(
        "/v1/language/default/chat",
        json={
            "message": {"role": "user", "content": "Say hello."},
            "override_params": {"local-smollm2": {"max_tokens": 8}},
        },
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["provider_id"] == "local" and body["model_id"] == "local-smollm2"
    assert body["model_response"]["message"]["content"].strip()
    assert body["model_response"]["token_usage"]["response_tokens"] > 0
