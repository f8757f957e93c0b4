"""Which endpoints a config leaves without any router.

A config file replaces the whole embedded default, so a file that lists only a
chat router serves no speech at all (and the reverse). A loaded `SluiceConfig`
flows in; the names of the endpoints that no enabled router serves flow out, for
the start-up log to say so.
"""

from __future__ import annotations

from config.models import SluiceConfig

ENDPOINT_SECTIONS: dict[str, str] = {
    "chat": "routers.language",
    "chatStream": "routers.language",
    "speak": "routers.speech[].speak",
    "listen": "routers.speech[].listen",
    "embed": "routers.embedding",
    "converse": "routers.agent",
}
"""Each routed endpoint -> the config section whose routers serve it."""


def endpoints_without_routers(config: SluiceConfig) -> list[str]:
    """A config in; the endpoints (of `ENDPOINT_SECTIONS`) no enabled router serves out.

    routers: {language: [default]}            -> ["speak", "listen"]
    routers: {speech: [{speak: ..., no listen}]} -> ["chat", "chatStream", "listen"]
    """
    missing: list[str] = []
    if not config.language_routers:
        missing += ["chat", "chatStream"]
    speech = config.speech_routers
    if not any(router.speak is not None for router in speech):
        missing.append("speak")
    if not any(router.listen is not None for router in speech):
        missing.append("listen")
    if not config.embedding_routers:
        missing.append("embed")
    if not config.agent_routers:
        missing.append("converse")
    return missing
