"""Ids of one Realtime session's events, items and responses.

OpenAI's ids are a prefix and an opaque token (`event_…`, `item_…`, `resp_…`,
`sess_…`); clients only compare them. Here each session draws one random token
and counts from it, so ids are unique across sessions and cheap to make.
"""

from __future__ import annotations

import secrets


class Ids:
    """Makes `prefix_<session token><counter>` ids for one session."""

    def __init__(self) -> None:
        self._token = secrets.token_hex(6)
        self._count = 0

    def make(self, prefix: str) -> str:
        """A prefix (`event`, `item`, `resp`, `sess`, `conv`) in; a fresh id out."""
        self._count += 1
        return f"{prefix}_{self._token}{self._count:06d}"
