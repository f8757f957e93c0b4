"""A conversation's memory: its messages, the tool calls waiting for results, and the
chat request each reply sends.

    remember(role, text, calls) ─► messages (same-role runs joined, bounded)
    tool_result(call_id, output) ─► a `tool` message, if that call is waiting
    close_calls() ─► calls still without a result leave the history
    request(instructions, settings) ─► the ChatRequest of the next reply

The rules (docs/conversations.md, "Tools" and "Decisions"): only the last reply's
calls wait for results; a new user turn or a respond drops those still waiting, so
the chat model never sees a call without its result; the history never starts with
a tool result.
"""

from __future__ import annotations

from typing import Any

from pipelines.conversation_types import ConversationSettings
from protocol.chat import ChatRequest
from providers.types import ToolCall


class History:
    """The messages of one conversation (plain chat dicts) and its open tool calls."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.open_calls: dict[str, ToolCall] = {}  # the last reply's calls without a result
        self.calls_user_text = ""  # the user turn those calls answer

    def last_role(self) -> str | None:
        """The role of the newest message, None when there is none."""
        return self.messages[-1]["role"] if self.messages else None

    def remember(self, role: str, text: str, limit: int, calls: tuple[ToolCall, ...] = ()) -> None:
        """A message in (joined to the last one when both are plain and of one role);
        at most `limit` messages kept, the oldest dropped, never a leading tool result."""
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == role and not calls and "tool_calls" not in last:
            self.messages[-1] = {"role": role, "content": f"{last['content']} {text}"}
        elif calls:
            self.messages.append(
                {"role": role, "content": text, "tool_calls": [c.to_json() for c in calls]}
            )
        else:
            self.messages.append({"role": role, "content": text})
        if len(self.messages) > limit:
            del self.messages[: len(self.messages) - limit]
        while self.messages and self.messages[0]["role"] == "tool":
            del self.messages[0]

    def await_calls(self, calls: tuple[ToolCall, ...], user_text: str) -> None:
        """A finished reply's calls in: they wait for results (replacing any before)."""
        self.open_calls = {call.id: call for call in calls}
        self.calls_user_text = user_text

    def tool_result(self, call_id: str, output: str) -> bool:
        """A call's result in; True when that call was waiting (it joins the history)."""
        if self.open_calls.pop(call_id, None) is None:
            return False
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        return True

    def close_calls(self) -> None:
        """The calls still without a result leave the history (the assistant's message
        keeps its text and its answered calls)."""
        if not self.open_calls:
            return
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if message["role"] == "assistant" and message.get("tool_calls"):
                kept = [c for c in message["tool_calls"] if c["id"] not in self.open_calls]
                if kept:
                    message["tool_calls"] = kept
                elif message["content"]:
                    del message["tool_calls"]
                else:
                    del self.messages[index]
                break
        self.open_calls.clear()

    def cut_last_reply(self, text: str) -> None:
        """A reply heard only in part: the last assistant message becomes `text` (or
        goes, when nothing of it was heard)."""
        if self.last_role() != "assistant":
            return
        if text:
            self.messages[-1] = {"role": "assistant", "content": text}
        else:
            del self.messages[-1]

    def request(self, instructions: str | None, settings: ConversationSettings) -> ChatRequest:
        """The chat request of the next reply: the instructions as the system message,
        then the history, with the conversation's tools. Raises ValueError when the
        history cannot make a request."""
        messages: list[dict[str, Any]] = []
        if instructions:
            messages.append({"role": "system", "content": instructions})
        messages.extend(self.messages)
        body: dict[str, Any] = {"message": messages[-1], "message_history": messages[:-1]}
        if settings.tools:
            body["tools"] = list(settings.tools)
            if settings.tool_choice is not None:
                body["tool_choice"] = settings.tool_choice
        return ChatRequest.model_validate(body)
