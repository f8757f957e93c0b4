"""`GET /v1/language`, `/v1/speech` and `/v1/agent`: the routers a caller may use.

A request in; JSON out listing each router's models (never a secret) with health,
limited to the routers the caller's key allows.
"""

from __future__ import annotations

from aiohttp import web

from gateway.core import GATEWAY
from glide_api.lookup import caller
from transport.http_json import json_response


async def list_language_routers(request: web.Request) -> web.Response:
    """The language routers and their models (never any secret), with health.

    A key limited to some routers sees only those.
    """
    gateway = request.app[GATEWAY]
    client = caller(request)
    now = gateway.clock()
    out = []
    for router in gateway.chat_routers.values():
        if not client.may_use(router.id):
            continue
        states = router.health.health_states(now)  # type: ignore[attr-defined]
        out.append(
            {
                "id": router.id,
                "strategy": router.config.strategy,
                "models": [
                    {
                        "id": m.id,
                        "provider": m.provider_key,
                        "model_name": router.model_info(m.id).model_name,
                        "weight": m.weight,
                        "health": states.get(m.id),
                        "capabilities": sorted(router.capabilities(m.id)),
                    }
                    for m in router.config.enabled_models
                ],
            }
        )
    return json_response({"routers": out})


async def list_speech_routers(request: web.Request) -> web.Response:
    """The speech routers, each with its speak / listen models (never any secret)."""
    gateway = request.app[GATEWAY]
    client = caller(request)
    now = gateway.clock()
    out = [
        {"id": router_id, **{kind: ep.describe(now) for kind, ep in by_kind.items()}}
        for router_id, by_kind in gateway.speech.items()
        if client.may_use(router_id)
    ]
    return json_response({"routers": out})


async def list_agent_routers(request: web.Request) -> web.Response:
    """The agent routers: which listen, chat and speak routers each composes."""
    gateway = request.app[GATEWAY]
    client = caller(request)
    out = [
        {
            "id": agent.id,
            "listen": agent.listen,
            "chat": agent.chat,
            "speak": agent.speak,
            "voice": agent.voice,
            "turn": agent.turn.model_dump(),
        }
        for agent in gateway.config.agent_routers
        if client.may_use(agent.id)
    ]
    return json_response({"routers": out})
