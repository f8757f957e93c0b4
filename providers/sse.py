"""Server-sent events over an aiohttp response body, for every SSE vendor.

In: an HTTP body stream. Out: `SSEEvent(event, data)` per event (the `event:`
field is what Anthropic and Cohere v2 dispatch on; OpenAI and Gemini only use
`data:`). Lines may arrive split across TCP reads; the decoder keeps the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from providers.types import ErrorCategory, ProviderError


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event: its `event:` name ("message" when absent) and its joined data."""

    event: str
    data: str


class SSEDecoder:
    """Server-sent-events decoding, one line at a time.

    In: lines without their terminator. Out: from `feed`, the finished event when
    a blank line ends one that had data (multi-line data joined by "\\n"), else
    None. Comments (`:`) and the `id` / `retry` fields are ignored.
    """

    __slots__ = ("_data", "_event")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""

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
    still counts. Raises `ProviderError(PROTOCOL)` for an over-long or non-UTF-8 line.
    """
    while True:
        try:
            raw = await content.readline()
        except ValueError as exc:  # aiohttp: a line beyond its buffer limit
            raise ProviderError(ErrorCategory.PROTOCOL, f"SSE line too long: {exc}") from exc
        if not raw:
            return decoder.flush()
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProviderError(ErrorCategory.PROTOCOL, "SSE line is not UTF-8") from exc
        event = decoder.feed(line.rstrip("\r\n"))
        if event is not None:
            return event
