"""What every part of a Realtime session's bridge shares: its settings, ids, event
maker, the two outlets (`send` into the conversation, `emit` to the socket) and the
id of the conversation's last item (each new item names it as `previous_item_id`).

    part of the bridge ─► channel.send(ConversationInput) ─► converse
                      └─► channel.emit(server event)     ─► socket
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.conversation_types import ConversationInput
from realtime.ids import Ids
from realtime.problems import Problem
from realtime.server_events import ServerEvents
from realtime.session import SessionSettings

Send = Callable[[ConversationInput], None]
Emit = Callable[[dict[str, Any]], None]


@dataclass
class Channel:
    """One session's shared state and outlets; does no I/O itself."""

    settings: SessionSettings
    events: ServerEvents
    ids: Ids
    send: Send
    emit: Emit
    last_item: str | None = None

    def created(self, item: dict[str, Any]) -> None:
        """An item in; `conversation.item.created` out (after the last item), and it
        becomes the last item."""
        self.emit(self.events.item_created(item, self.last_item))
        self.last_item = str(item["id"])

    def fail(self, problem: Problem) -> None:
        """A problem in; an `error` event out."""
        self.emit(self.events.error(problem))
