"""A Realtime session's `voice` -> the voice the speak router is asked for.

Realtime applications name OpenAI's voices (`alloy`, `marin`, ...), which only
OpenAI's speech models know; sent to espeak-ng or ElevenLabs they would fail
every reply. So an OpenAI voice name goes to the agent's OpenAI speak models
only (the others keep their configured voice), and any other name (an espeak-ng
voice, an ElevenLabs voice id) goes to every speak model, as the speak
endpoint's `voice` does.
"""

from __future__ import annotations

from protocol.speak import Voice

OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer"}
    | {"verse", "marin", "cedar"}
)


def speak_voice(name: str | None) -> Voice:
    """A session's voice name in; the speak router's `Voice` out (None: each model's own)."""
    if name is None:
        return None
    if name in OPENAI_VOICES:
        return {"openai": name}
    return name
