"""Registers the OpenAI-compatible routes on a Sluice app."""

from __future__ import annotations

from aiohttp import web

from openai_api.chat import chat_completions
from openai_api.speech import speech
from openai_api.transcriptions import transcriptions
from openai_api.types import GatewayKey


def add_openai_routes(app: web.Application, gateway_key: GatewayKey) -> None:
    """Add `POST /v1/chat/completions`, `/v1/audio/speech` and `/v1/audio/transcriptions`.

    `gateway_key` is where the server keeps its `Gateway` (`gateway.core.GATEWAY`); the
    handlers read it per request, so this may run before the app starts.
    """
    app.router.add_post("/v1/chat/completions", chat_completions(gateway_key))
    app.router.add_post("/v1/audio/speech", speech(gateway_key))
    app.router.add_post("/v1/audio/transcriptions", transcriptions(gateway_key))
