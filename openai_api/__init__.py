"""OpenAI-compatible HTTP endpoints over Sluice's routers and pipelines.

`add_openai_routes(app, GATEWAY)` adds `POST /v1/chat/completions`,
`POST /v1/audio/speech` and `POST /v1/audio/transcriptions`. Each is a thin
translation: the OpenAI body in, the same router or endpoint pipeline the native
API uses, the OpenAI response shape out.
"""

from openai_api.routes import add_openai_routes

__all__ = ["add_openai_routes"]
