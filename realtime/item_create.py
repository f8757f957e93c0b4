"""`conversation.item.create`: a client's item in; conversation inputs and
`conversation.item.created` out.

    user message, input_text   ─► UserText (no reply by itself)
    user message, input_audio  ─► one committed segment (transcribed like a commit)
    system message             ─► the session's instructions (Configure)
    function_call_output       ─► ToolResult, for a call of the last response still waiting

Anything else is refused with a `Problem` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pipelines.conversation_types import Configure, ToolResult, UserText
from realtime.channel import Channel
from realtime.client_events import ItemCreate
from realtime.input_buffer import InputBuffer
from realtime.problems import Problem
from realtime.user_items import UserItems


class ItemCreator:
    """Serves `conversation.item.create`; `take_call(call_id)` says whether that call waits
    for its output (and stops it waiting)."""

    def __init__(
        self,
        channel: Channel,
        audio: InputBuffer,
        users: UserItems,
        take_call: Callable[[str], bool],
    ) -> None:
        self.channel = channel
        self.audio = audio
        self.users = users
        self.take_call = take_call

    def create(self, event: ItemCreate) -> None:
        """One `conversation.item.create` in; raises `Problem` for an item not served."""
        item = event.item
        if item.get("type") == "function_call_output":
            self._call_output(item)
            return
        if item.get("type", "message") != "message":
            raise Problem(
                "unsupported",
                f"items of type {item.get('type')!r} are not supported "
                "(only messages and function_call_output)",
                "item.type",
            )
        role = item.get("role")
        texts, audio = self._content(item.get("content"))
        if role == "system":
            if audio:
                raise Problem("invalid_value", "system items carry text only", "item.content")
            instructions = " ".join(texts)
            channel = self.channel
            channel.settings = replace(channel.settings, instructions=instructions)
            channel.send(Configure(instructions=instructions))
            channel.created(self._text_item(item, "system", instructions))
        elif role == "user":
            if audio and texts:
                raise Problem(
                    "invalid_value", "a user item is either text or audio, not both", "item.content"
                )
            if texts:
                text = " ".join(texts)
                self.channel.send(UserText(text, respond=False))
                self.channel.created(self._text_item(item, "user", text))
            else:
                self.users.submit(b"".join(audio))
        else:
            raise Problem(
                "unsupported",
                "only user and system messages can be added (assistant items are not)",
                "item.role",
            )

    def _content(self, content: object) -> tuple[list[str], list[bytes]]:
        """A message's content in; its texts and its audio (16 kHz PCM) out."""
        if not isinstance(content, list) or not content:
            raise Problem("invalid_value", "item.content must be a non-empty list", "item.content")
        texts: list[str] = []
        audio: list[bytes] = []
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "input_audio":
                param = f"item.content[{index}].audio"
                audio.append(self.audio.decode_whole(part.get("audio"), param))
            else:
                raise Problem(
                    "invalid_value",
                    f"content part {index} must be input_text (with text) or input_audio",
                    f"item.content[{index}]",
                )
        return texts, audio

    def _call_output(self, item: dict[str, Any]) -> None:
        call_id = item.get("call_id")
        output = item.get("output")
        if not isinstance(call_id, str) or not call_id:
            raise Problem(
                "invalid_value", "a function_call_output needs its call_id", "item.call_id"
            )
        if not isinstance(output, str):
            raise Problem("invalid_value", "output must be a string", "item.output")
        if not self.take_call(call_id):
            raise Problem(
                "invalid_value",
                f"no function call {call_id!r} of the last response is waiting for its output",
                "item.call_id",
            )
        self.channel.send(ToolResult(call_id, output, respond=False))
        item_id = self._item_id(item)
        self.channel.created(
            self.channel.events.function_call_output_item(item_id, call_id, output)
        )

    def _text_item(self, item: dict[str, Any], role: str, text: str) -> dict[str, Any]:
        body = self.channel.events.user_item(self._item_id(item), text=text)
        body["role"] = role
        return body

    def _item_id(self, item: dict[str, Any]) -> str:
        given = item.get("id")
        return given if isinstance(given, str) and given else self.channel.ids.make("item")
