"""Scripted tool calls for the fake vendor servers, and the checks they share.

A test puts `ScriptedCall`s on a fake's script (`script.tool_calls`); the fake then
answers in its vendor's own tool-calling format: the call's arguments go out as
one JSON object (whole-call vendors) or as `fragments` of its JSON text
(vendors that stream arguments). A script's `fault_in_tool_call` tells a fake to
misbehave inside the first call rather than after some text.

The fakes validate incoming tool shapes strictly, as the real APIs do, through
`RequestInvalid` (raised by a check, turned into the vendor's 400 by the fake).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""The function names every vendor here accepts (Gemini also allows dots and colons)."""


class RequestInvalid(Exception):
    """A request the real API would refuse with a 400: the message says why."""


@dataclass(frozen=True)
class ScriptedCall:
    """One tool call the fake's model makes: `id` None lets the fake make one up."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as compact JSON text."""
        return json.dumps(self.arguments, separators=(",", ":"))

    def fragments(self, pieces: int = 3) -> list[str]:
        """The arguments' JSON text cut into up to `pieces` non-empty runs, in order."""
        text = self.arguments_json()
        size = max(1, -(-len(text) // pieces))
        return [text[i : i + size] for i in range(0, len(text), size)]


def require(condition: bool, message: str) -> None:
    """Raise `RequestInvalid(message)` unless `condition` holds."""
    if not condition:
        raise RequestInvalid(message)


def check_function_name(name: Any, where: str) -> None:
    """A function name as the vendors demand it."""
    require(
        isinstance(name, str) and FUNCTION_NAME.match(name) is not None,
        f"{where}: name must match ^[a-zA-Z0-9_-]{{1,64}}$",
    )


def check_object_schema(schema: Any, where: str) -> None:
    """A tool's parameter schema: a JSON object whose type is `object`."""
    require(isinstance(schema, dict), f"{where}: must be an object")
    require(schema.get("type") == "object", f"{where}.type: must be 'object'")
