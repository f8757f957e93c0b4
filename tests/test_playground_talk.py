"""The playground's Talk panel in a real browser: headless Chromium (Debian's) driven
by Playwright, its fake microphone fed from a WAV of known speech (espeak-ng).

The panel holds a conversation with an agent router (local STT, a fake OpenAI chat
upstream on loopback, local espeak TTS): the test starts it, waits until the user's
words are transcribed and the reply's audio has been played by the page's PcmPlayer
(the panel's `window.playground.stats.talk` counts what the AudioContext clock has
played), then stops the microphone and waits for the conversation to end.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from config.models import SluiceConfig
from fakes.openai_server import FakeOpenAI, run_fake_openai
from server import build_app
from tests.conftest import FAST_CLIENT
from tests.listen_client import local_model
from tests.test_playground_browser import CHROMIUM, HEARD, SENTENCE, _mic_wav

if TYPE_CHECKING:
    from playwright.async_api import Page

REPLY = ["The gate", " is open", " now."]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as fake:
        fake.script.chunks = list(REPLY)
        yield fake


def _config(upstream: FakeOpenAI, tmp_path: Path) -> SluiceConfig:
    return SluiceConfig.model_validate(
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
                "agent": [
                    {
                        "id": "helper",
                        "listen": "voice",
                        "chat": "demo",
                        "speak": "voice",
                        "instructions": "Answer briefly.",
                    }
                ],
            }
        }
    )


LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@asynccontextmanager
async def _talk_page(
    aiohttp_server: Any, upstream: FakeOpenAI, tmp_path: Path
) -> AsyncIterator[Page]:
    """The playground open in Chromium (fake microphone: 1 s of silence, the sentence,
    2 s of silence, looped) with the `helper` agent selected; no page errors after."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.async_api import async_playwright

    mic = tmp_path / "mic.wav"
    _mic_wav(mic)
    server = await aiohttp_server(build_app(_config(upstream, tmp_path)))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*LAUNCH_ARGS, f"--use-file-for-fake-audio-capture={mic}"],
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"http://127.0.0.1:{server.port}/playground")
            await page.wait_for_function(
                "document.querySelector('#talk-router').options.length > 0"
            )
            assert await page.input_value("#talk-router") == "helper"
            yield page
            assert errors == []
        finally:
            await browser.close()


@pytest.mark.slow
async def test_talk_panel_hears_the_user_and_plays_the_reply_in_chromium(
    aiohttp_server: Any, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    async with _talk_page(aiohttp_server, upstream, tmp_path) as page:
        await page.click("#talk-toggle")
        await page.wait_for_function("window.playground.stats.talk.turns > 0", timeout=60_000)
        talk = await page.evaluate("window.playground.stats.talk")
        assert HEARD in " ".join(talk["transcripts"]), talk
        assert talk["replies"][0] == "".join(REPLY), talk
        assert "".join(REPLY) in await page.inner_text("#talk-log")
        assert f"you: {HEARD}" in await page.inner_text("#talk-log")
        # the reply's audio reaches the speakers: the player's clock passes a quarter
        # second of it (24 kHz PCM16)
        assert talk["bytesReceived"] > 24000, talk
        await page.wait_for_function(
            "window.playground.stats.talk.bytesPlayed > 12000", timeout=30_000
        )

        await page.click("#talk-toggle")
        await page.wait_for_function("window.playground.stats.talk.ended === 1", timeout=60_000)
        assert await page.inner_text("#talk-toggle") == "Start conversation"


@pytest.mark.slow
async def test_talk_panel_stops_the_reply_when_the_user_speaks_again(
    aiohttp_server: Any, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    """A reply far longer than the microphone's loop: the sentence, heard again while
    the reply plays, is a barge-in; the panel silences the player at once."""
    upstream.script.chunks = [f"Sentence number {n} of a very long answer. " for n in range(12)]
    async with _talk_page(aiohttp_server, upstream, tmp_path) as page:
        await page.click("#talk-toggle")
        await page.wait_for_function("window.playground.stats.talk.interrupted > 0", timeout=60_000)
        talk = await page.evaluate("window.playground.stats.talk")
        cut = talk["lastInterrupt"]
        assert cut["bufferedAfterStop"] == 0, talk
        # the server kept what the page reported playing, not everything it sent
        assert 0 < cut["keptMs"] < len(upstream.script.chunks) * 1000, talk
        assert cut["playedMs"] * 48 < talk["bytesReceived"], talk
        assert "(interrupted;" in await page.inner_text("#talk-log")
        await page.click("#talk-toggle")
        await page.wait_for_function("window.playground.stats.talk.ended === 1", timeout=60_000)
