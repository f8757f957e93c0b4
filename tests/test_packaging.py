"""The two distributions as users install them: each wheel built with `python -m build`
and installed alone into a fresh virtualenv (pip may use its cache or PyPI).

- `sluice-client`: aiohttp only (none of the gateway's packages or engines present);
  a chat stream, a speak and a listen round trip against a real Sluice on loopback
  (a fake OpenAI upstream, the local speech engines).
- `sluice-gateway` without `[local]`: no compiler, no llama.cpp; `sluice serve`
  answers chat through a fake OpenAI-compatible upstream, and a config naming the
  local chat engine is refused by `sluice check-config` with one line naming the extra.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from config.extras import MISSING_LOCAL_ENGINE
from config.models import SluiceConfig
from fakes.openai_server import FakeOpenAI, run_fake_openai
from server import build_app
from tests.conftest import FAST_RETRY, openai_model

ROOT = Path(__file__).resolve().parent.parent
CLIENT_DIR = ROOT / "clients" / "python"

pytestmark = [pytest.mark.install, pytest.mark.timeout(180)]

MakeServer = Callable[[web.Application], Awaitable[TestServer]]

GATEWAY_IMPORTS = ("numpy", "reactivex", "pydantic", "yaml", "config", "server", "client")

CLIENT_SCRIPT = """
import asyncio, importlib.util, json, sys

import sluice_client
from sluice_client import AudioFormat, SluiceClient


async def main(url):
    fmt = AudioFormat("pcm_s16le", 16000)
    async with SluiceClient(url) as sluice:
        chunks = [e async for e in sluice.chat_stream("r", "Say hello.")]
        audio = await sluice.speak_bytes("s", "Hello there. How are you today?", format=fmt)
        finals = await sluice.listen_bytes("s", audio + bytes(32000), format=fmt)
    print(json.dumps({
        "module": sluice_client.__file__,
        "absent": [n for n in sys.argv[2:] if importlib.util.find_spec(n) is None],
        "chat": "".join(getattr(e, "content", "") for e in chunks),
        "finish": getattr(chunks[-1], "finish_reason", None),
        "audio": len(audio),
        "finals": [[t.text, t.provider_id] for t in finals],
    }))


asyncio.run(main(sys.argv[1]))
"""


def clean_env() -> dict[str, str]:
    """This process's environment without anything that points Python at this repo."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop}


async def run(*args: str | Path, cwd: Path, limit: float) -> tuple[int, str, str]:
    """Run a command to its end within `limit` seconds: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *(str(a) for a in args),
        cwd=cwd,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def must(*args: str | Path, cwd: Path, limit: float) -> str:
    """Run a command that must succeed; its stdout."""
    code, out, err = await run(*args, cwd=cwd, limit=limit)
    assert code == 0, f"{args} exited {code}:\n{err[-3000:]}"
    return out


async def build(source: Path, out: Path, *what: str) -> list[Path]:
    """`python -m build` of `source` into `out`: the files it made."""
    await must(sys.executable, "-m", "build", *what, "--outdir", out, source, cwd=out, limit=120)
    return await asyncio.to_thread(lambda: sorted(out.iterdir()))


async def fresh_venv(where: Path, wheel: Path) -> Path:
    """A new virtualenv (no pip of its own) with `wheel` and its dependencies: its python."""
    await must(sys.executable, "-m", "venv", "--without-pip", where, cwd=where.parent, limit=60)
    python = where / "bin" / "python"
    await must(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel,
        cwd=where.parent, limit=150,
    )  # fmt: skip
    return python


@pytest.fixture
def serve(aiohttp_server: Any) -> MakeServer:
    """Serve an aiohttp app on 127.0.0.1; the fixture closes it after the test."""

    async def make(app: web.Application) -> TestServer:
        server: TestServer = await aiohttp_server(app, host="127.0.0.1")
        return server

    return make


@pytest.fixture
async def fake() -> Any:
    """A fake OpenAI-compatible upstream answering a fixed text."""
    async with run_fake_openai() as upstream:
        upstream.script.chunks = ["Hello", " from", " the", " fake"]
        yield upstream


async def test_the_client_wheel_alone_talks_chat_speak_and_listen_to_sluice(
    tmp_path: Path, serve: MakeServer, fake: FakeOpenAI
) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    made = await build(CLIENT_DIR, dist, "--wheel")
    wheels = [p for p in made if p.suffix == ".whl"]
    assert len(wheels) == 1 and wheels[0].name.startswith("sluice_client-")
    with zipfile.ZipFile(wheels[0]) as whl:
        tops = {name.split("/")[0] for name in whl.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"sluice_client"}
    python = await fresh_venv(tmp_path / "venv", wheels[0])

    config = SluiceConfig.model_validate(
        {
            "routers": {
                "language": [{"id": "r", "retry": FAST_RETRY, "models": [openai_model("a", fake)]}],
                "speech": [
                    {
                        "id": "s",
                        "speak": {"models": [{"id": "espeak", "local": {}}]},
                        "listen": {"models": [{"id": "sphinx", "local": {}}]},
                    }
                ],
            }
        }
    )
    server = await serve(build_app(config))
    url = str(server.make_url("")).rstrip("/")
    out = await must(
        python, "-I", "-c", CLIENT_SCRIPT, url, *GATEWAY_IMPORTS, cwd=tmp_path, limit=60
    )
    got = json.loads(out)
    assert got["module"].startswith(str(tmp_path / "venv"))
    assert got["absent"] == list(GATEWAY_IMPORTS)
    assert got["chat"] == "Hello from the fake" and got["finish"] == "complete"
    assert got["audio"] > 32000  # over a second of 16 kHz PCM16 speech
    assert got["finals"] and all(provider for _, provider in got["finals"])
    assert any(text.strip() for text, _ in got["finals"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_gateway_wheel_without_local_serves_a_cloud_config(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    made = await build(ROOT, dist)
    assert sorted(p.name.rsplit(".", 1)[-1] for p in made) == ["gz", "whl"], made
    wheel = next(p for p in made if p.suffix == ".whl")
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        metadata = next(whl.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    tops = {name.split("/")[0] for name in names}
    assert "client" not in tops and "sluice_client" not in tops and "tests" not in tops
    assert "server.py" in tops and "config" in tops
    # the playground's JavaScript client (setup.py copies clients/js/src)
    assert {"playground/sluice-client/index.js", "playground/sluice-client/audio/index.js"} <= set(
        names
    )
    assert "Provides-Extra: local" in metadata
    assert 'Requires-Dist: llama-cpp-python<0.4,>=0.3.16; extra == "local"' in metadata

    venv = tmp_path / "venv"
    python = await fresh_venv(venv, wheel)
    code, out, _ = await run(
        python, "-I", "-c", "import importlib.util as u; print(u.find_spec('llama_cpp'))",
        cwd=tmp_path, limit=30,
    )  # fmt: skip
    assert (code, out.strip()) == (0, "None")

    local = tmp_path / "local.yaml"
    local.write_text(
        "routers:\n  language:\n    - id: r\n      models:\n        - id: s\n          local: {}\n"
    )
    code, out, err = await run(
        venv / "bin" / "sluice", "check-config", local, cwd=tmp_path, limit=30
    )
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{local}:6:11: routers.language[0].models[0].local: {MISSING_LOCAL_ENGINE}"
    ]

    cloud = tmp_path / "cloud.yaml"
    cloud.write_text(
        "routers:\n  language:\n    - id: r\n      models:\n        - id: a\n"
        f"          openai: {{base_url: '{fake.url}', api_key: sk-test}}\n"
    )
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "sluice"), "serve", "--config", str(cloud), "--port", str(port),
        cwd=tmp_path, env=clean_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"{base}/v1/health/") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the installed sluice did not come up")
            body = {"message": {"role": "user", "content": "hi"}}
            async with http.post(f"{base}/v1/language/r/chat", json=body) as resp:
                assert resp.status == 200
                answer = await resp.json()
            async with http.get(f"{base}/playground/sluice-client/client.js") as resp:
                assert resp.status == 200
                assert "export class SluiceClient" in await resp.text()
        content = answer["model_response"]["message"]["content"]
        assert content == "Hello from the fake"
        assert answer["provider_id"] == "openai"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        assert proc.stderr is not None
        await proc.stderr.read()
    assert proc.returncode == 0
