"""The Realtime API's error: what an `error` server event carries.

Errors about one client event name it (`event_id`) and, where one field is at
fault, the field (`param`). The socket lives on after every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Problem(Exception):
    """A client event that cannot be served: OpenAI's `{type, code, message, param,
    event_id}` error, e.g. `invalid_request_error` / `invalid_value`."""

    code: str
    message: str
    param: str | None = None
    event_id: str | None = None
    type: str = "invalid_request_error"

    def about(self, event_id: str | None) -> Problem:
        """The same problem, tied to client event `event_id`."""
        return Problem(self.code, self.message, self.param, event_id, self.type)

    def to_json(self) -> dict[str, Any]:
        """The `error` object of an `error` event."""
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": self.event_id,
        }
