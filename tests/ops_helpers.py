"""Helpers for the operations tests (security, limits, metrics, hostile input).

- `with_sections(config, auth=..., limits=..., ...)`: a config with some sections
  replaced (each given as plain data and validated).
- `ScriptedProvider`: an in-process chat provider (no network) whose streams
  are counted, for tests that need thousands of requests or endless streams.
- `scrape(client)`: the app's `/metrics`, parsed into {name: [(labels, value)]}.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from config.models import SluiceConfig
from providers.types import ChatDelta, ChatParams, TokenUsage


def with_sections(config: SluiceConfig, **sections: Any) -> SluiceConfig:
    """`config` with top-level sections (auth, limits, metrics, tracing) replaced."""
    built = SluiceConfig.model_validate(sections)
    return config.model_copy(update={name: getattr(built, name) for name in sections})


class ScriptedProvider:
    """A chat provider in memory: `chunks` (or endless chunks of `chunk_text`).

    `opened` / `closed` count streams started and finished (a cancelled stream
    closes too), so tests can see provider work cancelled.
    """

    provider_id = "scripted"

    def __init__(
        self,
        model_name: str = "scripted-1",
        chunks: list[str] | None = None,
        *,
        endless: bool = False,
        chunk_text: str = "x",
        delay: float = 0.0,
    ) -> None:
        self.model_name = model_name
        self.chunks = chunks if chunks is not None else ["Hello", " there"]
        self.endless = endless
        self.chunk_text = chunk_text
        self.delay = delay
        self.opened = 0
        self.closed = 0

    @property
    def open_streams(self) -> int:
        """Streams started and not yet finished."""
        return self.opened - self.closed

    async def stream(self, params: ChatParams) -> AsyncIterator[ChatDelta]:
        """Yield the scripted chunks, then a final delta."""
        self.opened += 1
        try:
            if self.endless:
                while True:
                    await asyncio.sleep(self.delay)
                    yield ChatDelta(self.chunk_text)
            for chunk in self.chunks:
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield ChatDelta(chunk)
            yield ChatDelta("", finish_reason="complete", usage=TokenUsage(1, 2, 3))
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        """Nothing to release."""


def scripted_factory(provider: ScriptedProvider) -> Any:
    """A `build_app` provider factory that serves every model with `provider`."""

    def factory(_model: Any, _session: Any) -> ScriptedProvider:
        return provider

    return factory


def scripted_config(**router: Any) -> SluiceConfig:
    """One language router `r` with one model `m` (served by a ScriptedProvider)."""
    return SluiceConfig.model_validate(
        {
            "routers": {
                "language": [
                    {
                        "id": "r",
                        "retry": {"max_retries": 0},
                        "models": [
                            {
                                "id": "m",
                                "client": {"first_chunk_timeout": "5s", "idle_timeout": "5s"},
                                "openai": {"base_url": "http://127.0.0.1:9/v1"},
                            }
                        ],
                        **router,
                    }
                ]
            }
        }
    )


Samples = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(client: TestClient[Any, Any], **headers: str) -> Samples:
    """GET /metrics, parsed: sample name -> [(labels, value)]."""
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    return sum(
        v for got, v in samples.get(name, []) if all(got.get(k) == x for k, x in labels.items())
    )
