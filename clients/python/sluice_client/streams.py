"""A request handle as an async iterator of events, plus the input pumps of speak and listen.

handle inbox ─► next_event(handle) ─► (Event | audio, last?) | raise typed error
async iterable of text / audio ─► pump_* ─► handle outbox (waits at its high-water mark)
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Mapping
from typing import Any

from sluice_client.errors import error_from_wire
from sluice_client.events import Event, parse_event
from sluice_client.framing import finish_reason
from sluice_client.messages import end_message, text_message
from sluice_client.request import RequestHandle


async def next_event(
    handle: RequestHandle,
    parse: Callable[[str, Mapping[str, Any]], Event] = parse_event,
) -> tuple[Event | bytes, bool]:
    """The request's next event (or audio bytes), and whether it is the last one;
    `parse` turns a frame into its event (the endpoint's parser).

    A terminal error frame raises its typed `SluiceError`; a connection failure
    raises `ConnectionLost` / `ConnectFailed`; a failed input pump raises its error.
    Callers loop until `last`, and call `handle.close()` when they stop (which
    sends `cancel` if the request still runs).
    """
    item = await handle.next()
    if isinstance(item, BaseException):
        raise item
    if isinstance(item, bytes):
        return item, False
    terminal = finish_reason(item) is not None
    if terminal and item.get("type") == "error":
        raise error_from_wire(item)
    return parse(handle.id, item), terminal


async def pump_text(handle: RequestHandle, pieces: AsyncIterable[str]) -> None:
    """Send each text piece as a `text` message, then an empty one with `final: true`."""
    async for piece in pieces:
        await handle.writable()
        if handle.ended:
            return
        if piece:
            handle.send_json(text_message(piece))
    handle.send_json(text_message("", final=True))


async def pump_audio(
    handle: RequestHandle, audio: AsyncIterable[bytes], end: Mapping[str, object] | None = None
) -> None:
    """Send each audio chunk as a binary frame, then the `end` message."""
    async for chunk in audio:
        await handle.writable()
        if handle.ended:
            return
        if chunk:
            handle.send_audio(chunk)
    handle.send_json(dict(end) if end is not None else end_message())
