"""One router mixing three vendors fails over between them, end to end over chatStream."""

from __future__ import annotations

import json

from config.models import SluiceConfig
from fakes.anthropic_server import run_fake_anthropic
from fakes.cohere_server import run_fake_cohere
from fakes.gemini_server import run_fake_gemini
from tests.conftest import FAST_CLIENT, FAST_RETRY, MakeClient, collect, text_of


async def test_router_of_anthropic_gemini_cohere_fails_over_across_vendors(
    sluice: MakeClient,
) -> None:
    async with (
        run_fake_anthropic() as anthropic,
        run_fake_gemini() as gemini,
        run_fake_cohere() as cohere,
    ):
        anthropic.script.fault = "http_500"  # fails before the first chunk: silent
        gemini.script.chunks = ["partial", " gemini", " text"]
        gemini.script.fault = "truncated"  # fails after a chunk: a reset
        gemini.script.fault_after_chunks = 1
        cohere.script.chunks = ["Cohere", " saves", " the", " day"]
        config = SluiceConfig.model_validate(
            {
                "routers": {
                    "language": [
                        {
                            "id": "mixed",
                            "retry": FAST_RETRY,
                            "models": [
                                {
                                    "id": "claude",
                                    "client": FAST_CLIENT,
                                    "anthropic": {"base_url": anthropic.url, "api_key": "ak-1"},
                                },
                                {
                                    "id": "gemini",
                                    "client": FAST_CLIENT,
                                    "gemini": {"base_url": gemini.url, "api_key": "gk-1"},
                                },
                                {
                                    "id": "cohere",
                                    "client": FAST_CLIENT,
                                    "cohere": {
                                        "base_url": cohere.url,
                                        "api": "v2",
                                        "api_key": "ck-1",
                                    },
                                },
                            ],
                        }
                    ]
                }
            }
        )
        client = await sluice(config)
        async with client.ws_connect("/v1/language/mixed/chatStream") as ws:
            await ws.send_str(
                json.dumps(
                    {
                        "request_id": "x1",
                        "message": {"role": "user", "content": "hi"},
                        "message_history": [{"role": "system", "content": "be kind"}],
                    }
                )
            )
            frames = (await collect(ws, 1))["x1"]

    resets = [f for f in frames if f["type"] == "error"]
    assert [r["error"]["name"] for r in resets] == ["model_unavailable"]
    assert resets[0]["error"]["model_id"] == "gemini"
    assert text_of(frames) == "Cohere saves the day"
    last = frames[-1]["chunk"]
    assert last["model_id"] == "cohere" and last["provider_id"] == "cohere"
    assert last["finish_reason"] == "complete"
    assert anthropic.stats.requests == 1 and gemini.stats.requests == 1
