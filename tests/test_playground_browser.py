"""The playground in a real browser: headless Chromium (Debian's) driven by Playwright.

The microphone is Chromium's fake capture device fed from a WAV of known speech
(made here with espeak-ng); the test holds the talk button, then checks that the
transcript appears on the page, that a chat answer streams in, and that speaking a
typed text plays audio.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from audio.resample import resample
from config.models import SluiceConfig
from fakes.openai_server import FakeOpenAI, run_fake_openai
from server import build_app
from tests.conftest import FAST_CLIENT
from tests.listen_client import local_model
from tests.speech_audio import ESPEAK_RATE, synthesize

CHROMIUM = os.environ.get("SLUICE_CHROMIUM", "/usr/bin/chromium")
SENTENCE = "please open the garden gate"
HEARD = "please open the garden"
"""What the browser tests require of the transcript: the captured audio reaches the
engine and its words come back. pocketsphinx decodes the quiet last word of this
espeak capture as "gate", "the" or nothing depending on where the browser's 20 ms
frames fall (checked offline on captured audio), so the tests do not hinge on it."""
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        fake.script.chunks = ["Rivers:", " Nile,", " Amazon,", " Danube."]
        yield fake


def _mic_wav(path: Path) -> None:
    """Known speech between stretches of silence, at 48 kHz like a real microphone."""
    speech = synthesize([SENTENCE], wpm=140)[SENTENCE]
    speech_48k = resample(speech, ESPEAK_RATE, 48000)
    quiet = np.zeros(48000, dtype=np.int16)
    soundfile.write(path, np.concatenate([quiet, speech_48k, quiet, quiet]), 48000, "PCM_16")


@pytest.mark.slow
async def test_playground_chats_listens_and_speaks_in_chromium(
    aiohttp_server: Any, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.async_api import async_playwright

    mic = tmp_path / "mic.wav"
    _mic_wav(mic)
    config = SluiceConfig.model_validate(
        {
            "routers": {
                "language": [
                    {
                        "id": "demo",
                        "models": [
                            {
                                "id": "fake",
                                "client": FAST_CLIENT,
                                "openai": {"base_url": upstream.url, "api_key": "sk-x"},
                            }
                        ],
                    }
                ],
                "speech": [
                    {
                        "id": "voice",
                        "speak": {"models": [{"id": "espeak", "local": {}}]},
                        "listen": {"models": [local_model(tmp_path, [SENTENCE])]},
                    }
                ],
            }
        }
    )
    server = await aiohttp_server(build_app(config))
    base = f"http://127.0.0.1:{server.port}"

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{base}/playground")
            await page.wait_for_function(
                "document.querySelector('#listen-router').options.length > 0"
            )

            await page.fill("#chat-input", "Name three rivers.")
            await page.press("#chat-input", "Enter")
            await page.wait_for_function("window.playground.stats.chatDone === 1")
            assert "Nile, Amazon, Danube." in await page.inner_text("#chat-log")

            talk = page.locator("#talk")
            await talk.hover()
            await page.mouse.down()
            # the fake microphone plays 1 s of silence, the sentence (about 2 s), then
            # 2 s of silence; release well after the sentence but before it loops
            await page.wait_for_timeout(4800)
            await page.mouse.up()
            await page.wait_for_function(
                "window.playground.stats.transcripts.length > 0", timeout=30_000
            )
            heard = " ".join(await page.evaluate("window.playground.stats.transcripts"))
            assert HEARD in heard, heard

            await page.fill("#speak-input", "The garden gate is open.")
            await page.press("#speak-input", "Enter")
            await page.wait_for_function("window.playground.stats.speakDone === 1")
            audio_bytes = await page.evaluate("window.playground.stats.audioBytes")
            assert audio_bytes > 24000  # more than half a second of 24 kHz PCM16

            await page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
            if os.environ.get("SLUICE_SCREENSHOT"):
                shutil.copy(tmp_path / "playground.png", ROOT / "docs" / "playground.png")
            assert errors == []
        finally:
            await browser.close()
