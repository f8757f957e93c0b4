"""The JavaScript client (clients/js, npm `sluice-client`) against a real Sluice on loopback.

pytest starts Sluice (in this process) with fake OpenAI upstreams and the local speech
engines, a TCP proxy that can cut the sockets through it, and writes a WAV of known
speech; then runs `node --test clients/js/test/` with their URLs in environment
variables and fails with node's output if any node test fails. `tsc --noEmit` checks
the hand-written type declarations against a typed usage file, and the sources
against their JSDoc types.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from audio.resample import resample
from config.models import SluiceConfig
from fakes.openai_server import FakeOpenAI, FakeToolCall, run_fake_openai
from server import build_app
from tests.conftest import FAST_CLIENT, FAST_RETRY
from tests.js_proxy import CuttingProxy
from tests.listen_client import local_model
from tests.speech_audio import ESPEAK_RATE, synthesize

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "clients" / "js"
SENTENCE = "turn on the kitchen lights"

MIN_NODE_TESTS = 25
"""The node tests in clients/js/test/ (a file that fails to load would lower the count)."""

pytestmark = pytest.mark.timeout(240)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: run scripts/system-deps.sh (Debian: nodejs and npm)")
    if not (JS_DIR / "node_modules" / "ws").is_dir():
        pytest.fail("clients/js/node_modules is missing: `npm ci` in clients/js (make test does)")
    return node


async def _run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=JS_DIR,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace")


def _model(model_id: str, fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "id": model_id,
        "client": FAST_CLIENT,
        "openai": {"base_url": fake.url, "model": f"gpt-{model_id}", "api_key": "sk-js"},
    }


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeOpenAI]]:
    """`broken` truncates after two chunks, `backup` answers, `slow` takes its time,
    `tools` calls a tool when offered one."""
    async with (
        run_fake_openai() as broken,
        run_fake_openai() as backup,
        run_fake_openai() as slow,
        run_fake_openai() as tools,
    ):
        tools.script.tool_calls = [
            FakeToolCall("get_weather", '{"city": "Paris"}', id="call_weather")
        ]
        tools.script.chunks = ["Sunny", " in Paris."]
        broken.script.fault = "truncated"
        broken.script.fault_after_chunks = 2
        backup.script.chunks = ["Backup", " answer"]
        slow.script.chunks = [f"w{i} " for i in range(40)]
        slow.script.delay = 0.1
        yield {"broken": broken, "backup": backup, "slow": slow, "tools": tools}


def _config(fakes: dict[str, FakeOpenAI], lm_dir: Path) -> SluiceConfig:
    return SluiceConfig.model_validate(
        {
            "routers": {
                "language": [
                    {
                        "id": "failover",
                        "retry": FAST_RETRY,
                        "mid_stream": "restart",
                        "models": [_model("a", fakes["broken"]), _model("b", fakes["backup"])],
                    },
                    {"id": "plain", "retry": FAST_RETRY, "models": [_model("b", fakes["backup"])]},
                    {"id": "slow", "retry": FAST_RETRY, "models": [_model("s", fakes["slow"])]},
                    {"id": "tools", "retry": FAST_RETRY, "models": [_model("t", fakes["tools"])]},
                ],
                "speech": [
                    {
                        "id": "voice",
                        "speak": {"models": [{"id": "espeak", "local": {}}]},
                        "listen": {"models": [local_model(lm_dir, [SENTENCE])]},
                    }
                ],
                "agent": [
                    {"id": "assistant", "listen": "voice", "chat": "plain", "speak": "voice"},
                    {"id": "helper", "listen": "voice", "chat": "tools", "speak": "voice"},
                ],
            }
        }
    )


def _speech_wav(path: Path) -> None:
    """Known speech at 16 kHz, with silence around it so the VAD closes the segment."""
    speech = resample(synthesize([SENTENCE])[SENTENCE], ESPEAK_RATE, 16000)
    quiet = np.zeros(16000, dtype=np.int16)
    soundfile.write(path, np.concatenate([quiet, speech, quiet, quiet]), 16000, "PCM_16")


@pytest.mark.slow
async def test_node_tests_of_the_js_client_pass_against_a_real_sluice(
    aiohttp_server: Any, fakes: dict[str, FakeOpenAI], tmp_path: Path
) -> None:
    node = _node()
    wav = tmp_path / "speech.wav"
    _speech_wav(wav)
    sluice = await aiohttp_server(build_app(_config(fakes, tmp_path)), host="127.0.0.1")
    proxy = CuttingProxy(sluice.port)
    await proxy.start()
    control = await aiohttp_server(proxy.control_app(), host="127.0.0.1")
    try:
        code, out = await _run(
            node,
            "--test",
            "--test-reporter=tap",
            "test/",
            env={
                "SLUICE_URL": f"http://127.0.0.1:{sluice.port}",
                "SLUICE_PROXY_URL": f"http://127.0.0.1:{proxy.port}",
                "SLUICE_PROXY_CONTROL": f"http://127.0.0.1:{control.port}",
                "SLUICE_WAV": str(wav),
                "SLUICE_SENTENCE": SENTENCE,
            },
        )
    finally:
        await proxy.close()
    assert code == 0, out
    counts = dict(re.findall(r"^# (tests|pass|fail|skipped|cancelled|todo) (\d+)$", out, re.M))
    assert counts["fail"] == counts["skipped"] == counts["cancelled"] == counts["todo"] == "0", out
    assert counts["pass"] == counts["tests"] and int(counts["tests"]) >= MIN_NODE_TESTS, out
    assert proxy.cuts >= 2, out


async def test_the_type_declarations_check_with_tsc() -> None:
    tsc = JS_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    node = _node()
    # the declarations against a typed usage file, then the sources against their JSDoc
    for project in ("tsconfig.json", "tsconfig.src.json"):
        code, out = await _run(node, str(tsc), "--noEmit", "-p", project)
        assert code == 0, out


JS_BLOCK = re.compile(r"^```js\n(.*?)^```", re.M | re.S)


async def test_the_javascript_examples_of_the_docs_parse(tmp_path: Path) -> None:
    node = _node()
    pages = [ROOT / "README.md", ROOT / "docs" / "js-client.md", JS_DIR / "README.md"]
    blocks = [(page, block) for page in pages for block in JS_BLOCK.findall(page.read_text())]
    assert len(blocks) >= 5
    for n, (page, block) in enumerate(blocks):
        module = tmp_path / f"example{n}.mjs"
        module.write_text(block)
        code, out = await _run(node, "--check", str(module))
        assert code == 0, f"{page.name}: {out}\n{block}"
