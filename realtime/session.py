"""A Realtime session's settings, `session.update` in either dialect, and their JSON.

    session.update {session: {...}} ─► apply_update(settings, body) ─► new settings
    settings ─► session_json(settings, dialect) ─► session.created / session.updated

Both shapes are read whatever the dialect: GA (`audio.input.format`,
`audio.input.turn_detection`, `audio.output.voice`, `output_modalities`) and beta
(`input_audio_format`, `turn_detection`, `voice`, `modalities`). What a session
cannot change here (temperature, noise reduction, ...) is accepted and not used.
Function `tools` and `tool_choice` (the Realtime shapes) are kept, echoed, and
given to the chat router in its shapes (`chat_tools`, `chat_tool_choice`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from realtime.formats import PCM, AudioFormat, FormatError, parse_format
from realtime.problems import Problem

Dialect = Literal["ga", "beta"]


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """Server VAD on, with the knobs the client sent (echoed; the agent router's
    listen VAD settings decide the actual boundaries)."""

    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True

    def to_json(self) -> dict[str, Any]:
        """The `turn_detection` object."""
        return {
            "type": self.type,
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What one Realtime session is set to."""

    id: str
    model: str
    instructions: str = ""
    voice: str | None = None
    input_format: AudioFormat = PCM
    output_format: AudioFormat = PCM
    turn_detection: TurnDetection | None = TurnDetection()
    text_only: bool = False
    transcription_model: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] = "auto"


def chat_tools(tools: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    """Realtime function tools (`{type, name, description, parameters}`) in; the
    chat shape (`{type: function, function: {...}}`) out."""
    out = []
    for tool in tools:
        function = {key: tool[key] for key in ("name", "description", "parameters") if key in tool}
        out.append({"type": "function", "function": function})
    return tuple(out)


def chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    """A Realtime `tool_choice` in; the chat shape out."""
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _tools(value: object) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _problem("tools must be a list", "session.tools")
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        param = f"session.tools[{index}]"
        if not isinstance(tool, dict):
            raise _problem("a tool must be an object", param)
        if tool.get("type", "function") != "function":
            raise Problem("unsupported", "only function tools are supported", f"{param}.type")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _problem("a function tool needs a name", f"{param}.name")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise _problem("description must be a string", f"{param}.description")
        parameters = tool.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise _problem("parameters must be a JSON schema object", f"{param}.parameters")
        entry: dict[str, Any] = {"type": "function", "name": name, "parameters": parameters}
        if description is not None:
            entry["description"] = description
        tools.append(entry)
    return tuple(tools)


def _tool_choice(value: object, tools: tuple[dict[str, Any], ...]) -> str | dict[str, Any]:
    if value in ("auto", "none", "required"):
        return str(value)
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if not isinstance(name, str) or name not in {t["name"] for t in tools}:
            raise _problem("tool_choice names a function not in tools", "session.tool_choice.name")
        return {"type": "function", "name": name}
    raise _problem(
        "tool_choice is 'auto', 'none', 'required' or {type: function, name}",
        "session.tool_choice",
    )


def _problem(message: str, param: str, code: str = "invalid_value") -> Problem:
    return Problem(code, message, param=param)


def _format(value: object, param: str) -> AudioFormat:
    try:
        return parse_format(value)
    except FormatError as error:
        raise _problem(str(error), param) from error


def _turn_detection(
    value: object, current: TurnDetection | None, param: str
) -> TurnDetection | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _problem("turn_detection must be an object or null", param)
    kind = value.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise _problem(f"unknown turn_detection type {kind!r}", f"{param}.type")
    base = current or TurnDetection()
    fields: dict[str, Any] = {"type": kind}
    for name, cast in (
        ("threshold", float),
        ("prefix_padding_ms", int),
        ("silence_duration_ms", int),
        ("create_response", bool),
        ("interrupt_response", bool),
    ):
        if name in value and value[name] is not None:
            item = value[name]
            if cast is bool and not isinstance(item, bool):
                raise _problem(f"{name} must be true or false", f"{param}.{name}")
            if cast is not bool and (isinstance(item, bool) or not isinstance(item, int | float)):
                raise _problem(f"{name} must be a number", f"{param}.{name}")
            fields[name] = cast(item)
    return replace(base, **fields)


def _modalities(value: object, param: str) -> bool:
    """A modalities list in; whether it asks for text only."""
    if not isinstance(value, list) or not value or not set(value) <= {"text", "audio"}:
        raise _problem("modalities are a list of 'text' and 'audio'", param)
    return "audio" not in value


def _voice(value: object, param: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    if not isinstance(value, str) or not value:
        raise _problem("voice must be a voice name", param)
    return value


def apply_update(settings: SessionSettings, body: object) -> SessionSettings:
    """The settings and a `session.update`'s `session` object in; the new settings out.

    Raises `Problem` (with the field in `param`) and changes nothing when any
    field is wrong.
    """
    if not isinstance(body, dict):
        raise _problem("session must be an object", "session")
    if body.get("type", "realtime") != "realtime":
        raise _problem(
            "only realtime sessions are served here (not transcription sessions)", "session.type"
        )
    changes: dict[str, Any] = {}
    if "tools" in body:
        changes["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        tools = changes.get("tools", settings.tools)
        changes["tool_choice"] = _tool_choice(body["tool_choice"], tools)
    if "instructions" in body:
        instructions = body["instructions"]
        if instructions is not None and not isinstance(instructions, str):
            raise _problem("instructions must be a string", "session.instructions")
        changes["instructions"] = instructions or ""
    for key in ("output_modalities", "modalities"):
        if key in body and body[key] is not None:
            changes["text_only"] = _modalities(body[key], f"session.{key}")
    if "voice" in body:
        changes["voice"] = _voice(body["voice"], "session.voice")
    if body.get("input_audio_format") is not None:
        changes["input_format"] = _format(body["input_audio_format"], "session.input_audio_format")
    if body.get("output_audio_format") is not None:
        changes["output_format"] = _format(
            body["output_audio_format"], "session.output_audio_format"
        )
    if "turn_detection" in body:
        changes["turn_detection"] = _turn_detection(
            body["turn_detection"], settings.turn_detection, "session.turn_detection"
        )
    audio = body.get("audio")
    if audio is not None:
        if not isinstance(audio, dict):
            raise _problem("audio must be an object", "session.audio")
        changes.update(_audio_update(audio, settings))
    return replace(settings, **changes)


def _audio_update(audio: dict[str, Any], settings: SessionSettings) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    source = audio.get("input") or {}
    sink = audio.get("output") or {}
    if not isinstance(source, dict) or not isinstance(sink, dict):
        raise _problem("audio.input and audio.output must be objects", "session.audio")
    if source.get("format") is not None:
        changes["input_format"] = _format(source["format"], "session.audio.input.format")
    if "turn_detection" in source:
        changes["turn_detection"] = _turn_detection(
            source["turn_detection"], settings.turn_detection, "session.audio.input.turn_detection"
        )
    if sink.get("format") is not None:
        changes["output_format"] = _format(sink["format"], "session.audio.output.format")
    if "voice" in sink:
        changes["voice"] = _voice(sink["voice"], "session.audio.output.voice")
    return changes


def session_json(settings: SessionSettings, dialect: Dialect) -> dict[str, Any]:
    """The settings in; the `session` object of `session.created` / `.updated` out."""
    turn = settings.turn_detection.to_json() if settings.turn_detection else None
    transcription = {"model": settings.transcription_model}
    if dialect == "beta":
        # no `model`: the beta types allow only OpenAI's model names there
        return {
            "id": settings.id,
            "object": "realtime.session",
            "modalities": ["text"] if settings.text_only else ["audio", "text"],
            "instructions": settings.instructions,
            "voice": settings.voice,
            "input_audio_format": settings.input_format.beta(),
            "output_audio_format": settings.output_format.beta(),
            "input_audio_transcription": transcription,
            "turn_detection": turn,
            "tools": list(settings.tools),
            "tool_choice": _choice_json(settings.tool_choice),
            "max_response_output_tokens": "inf",
        }
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": settings.id,
        "model": settings.model,
        "output_modalities": ["text"] if settings.text_only else ["audio"],
        "instructions": settings.instructions,
        "audio": {
            "input": {
                "format": settings.input_format.ga(),
                "transcription": transcription,
                "turn_detection": turn,
                "noise_reduction": None,
            },
            "output": {
                "format": settings.output_format.ga(),
                "voice": settings.voice,
                "speed": 1.0,
            },
        },
        "tools": list(settings.tools),
        "tool_choice": settings.tool_choice,
        "max_output_tokens": "inf",
    }


def _choice_json(choice: str | dict[str, Any]) -> str:
    # the beta session type has only the string forms; a named function reads "required"
    return choice if isinstance(choice, str) else "required"
