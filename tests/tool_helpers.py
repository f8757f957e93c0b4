"""What the adapters' tool and image tests share: tools, a tool-calling conversation,
a tiny PNG, and the assembly of streamed `ToolCallDelta` fragments into calls."""

from __future__ import annotations

import json
from typing import Any

from providers.types import (
    ChatDelta,
    ChatParams,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)
"""A 1x1 PNG."""

WEATHER = ToolSpec(
    "get_weather",
    "The current weather in a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
)
TIME = ToolSpec("get_time", None, {"type": "object", "properties": {"tz": {"type": "string"}}})
TOOLS = (WEATHER, TIME)

CALL_A = ToolCall("call_a", "get_weather", '{"city": "Paris"}')
CALL_B = ToolCall("call_b", "get_time", '{"tz": "CET"}')

HISTORY = (
    Message("system", "be brief"),
    Message("user", "Weather and time in Paris?"),
    Message("assistant", "Let me look.", tool_calls=(CALL_A, CALL_B)),
    Message("tool", "18C and sunny", tool_call_id="call_a"),
    Message("tool", "14:05", tool_call_id="call_b"),
    Message("assistant", "It is 18C and 14:05."),
    Message(
        "user",
        "And this picture?",
        parts=(TextPart("And this picture?"), ImagePart("image/png", PNG)),
    ),
)
"""A conversation with two parallel calls answered by two results, then an image."""


def tool_params(
    messages: tuple[Message, ...] = (Message("user", "Weather in Paris?"),),
    choice: ToolChoice | None = None,
    params: dict[str, Any] | None = None,
) -> ChatParams:
    """A request that offers `TOOLS` with `choice` (and vendor `params`)."""
    return ChatParams(messages=messages, params=params or {}, tools=TOOLS, tool_choice=choice)


def assemble(deltas: list[ChatDelta]) -> list[ToolCall]:
    """The calls streamed fragments add up to, in index order (as the router does)."""
    ids: dict[int, str] = {}
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    for delta in deltas:
        for piece in delta.tool_calls:
            if piece.id is not None:
                ids[piece.index] = piece.id
            if piece.name is not None:
                names[piece.index] = piece.name
            args[piece.index] = args.get(piece.index, "") + piece.arguments
    assert sorted(args) == list(range(len(args))), "call indexes count from 0 without gaps"
    return [ToolCall(ids[i], names[i], args[i]) for i in sorted(args)]


def parsed(calls: list[ToolCall] | tuple[ToolCall, ...]) -> list[tuple[str, dict[str, Any]]]:
    """(name, arguments as an object) per call: what a client runs."""
    return [(call.name, json.loads(call.arguments)) for call in calls]


def text_of(deltas: list[ChatDelta]) -> str:
    """The streamed text."""
    return "".join(delta.content for delta in deltas)
