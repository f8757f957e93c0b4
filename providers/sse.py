"""Server-sent events over an aiohttp response body, for every SSE vendor.

In: an HTTP body stream. Out: `SSEEvent(event, data)` per event (the `event:`
field is what Anthropic and Cohere v2 dispatch on; OpenAI and Gemini only use
`data:`). Lines may arrive split across TCP reads; the decoder keeps the rest.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import aiohttp

from providers.types import ErrorCategory, ProviderError


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event: its `event:` name ("message" when absent) and its joined data."""

    event: str
    data: str


MAX_LINE_BYTES = 1 << 20
"""The longest SSE line accepted (a vendor event is one line of JSON)."""


class SSEDecoder:
    """Server-sent-events decoding, one line (`feed`) or one body chunk
    (`feed_bytes`) at a time.

    In: lines without their terminator, or raw body bytes. Out: from `feed`, the
    finished event when a blank line ends one that had data (multi-line data
    joined by "\\n"), else None; from `feed_bytes`, finished events queue up for
    `pop`. Comments (`:`) and the `id` / `retry` fields are ignored.
    """

    __slots__ = ("_data", "_event", "_events", "_rest")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._rest = b""
        self._events: deque[SSEEvent] = deque()

    def feed_bytes(self, chunk: bytes) -> None:
        """Take a piece of the body: its complete lines are decoded, the rest kept.

        Raises `ProviderError(PROTOCOL)` for a non-UTF-8 line or one over
        `MAX_LINE_BYTES`.
        """
        if self._rest:
            chunk = self._rest + chunk
        lines = chunk.split(b"\n")
        self._rest = lines.pop()
        if len(self._rest) > MAX_LINE_BYTES:
            raise ProviderError(ErrorCategory.PROTOCOL, "SSE line too long")
        events = self._events
        for raw in lines:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProviderError(ErrorCategory.PROTOCOL, "SSE line is not UTF-8") from exc
            if line[-1:] == "\r":
                line = line[:-1]
            event = self.feed(line)
            if event is not None:
                events.append(event)

    def pop(self) -> SSEEvent | None:
        """The oldest finished event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def end(self) -> SSEEvent | None:
        """At end of input: the events still queued, then an unterminated last one."""
        if self._events:
            return self._events.popleft()
        if self._rest:
            rest, self._rest = self._rest, b""
            self.feed_bytes(rest + b"\n")
            if self._events:
                return self._events.popleft()
        return self.flush()

    def feed(self, line: str) -> SSEEvent | None:
        """Take one line; return the finished event when `line` is blank."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._data = []
            self._event = ""
            return event
        if line[0] == ":":
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def flush(self) -> SSEEvent | None:
        """At end of input: an event that lacked its blank line, if any."""
        return self.feed("")


async def read_sse_event(content: aiohttp.StreamReader, decoder: SSEDecoder) -> SSEEvent | None:
    """Read up to the end of the next SSE event of an HTTP body.

    Out: that event, or None at end of body; a last event missing its blank line
    still counts. The body is read in whatever pieces arrive (not line by line),
    so several events that came in one read cost one await. Raises
    `ProviderError(PROTOCOL)` for an over-long or non-UTF-8 line.
    """
    while True:
        event = decoder.pop()
        if event is not None:
            return event
        chunk = await content.readany()
        if not chunk:
            return decoder.end()
        decoder.feed_bytes(chunk)
