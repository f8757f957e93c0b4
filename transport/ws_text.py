"""A websocket whose text frames that are not UTF-8 end only themselves, not the socket.

aiohttp fails the whole connection (close 1007) on a text frame that is not valid
UTF-8; Sluice's rule is that a bad frame gets a typed error and the socket lives
on. `TextFrameSocket` reads text frames as bytes and decodes them itself:

    TEXT b'{"request_id": ...}'  ->  TEXT '{"request_id": ...}'
    TEXT b'\xff\xfe'             ->  TEXT INVALID_UTF8   (parse_text: payload_parse_error)
    TEXT (not UTF-8, > limit)    ->  TEXT of limit + 1 such characters (closed 1009 as too big)

Every other message passes unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import WSMessage, WSMsgType, web

from protocol.messages import INVALID_UTF8


def decode_text_frame(data: bytes | bytearray, limit: int) -> str:
    """A text frame's payload in, the text the session parses out (see the module)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if len(data) > limit:
            return INVALID_UTF8 * (limit + 1)
        return INVALID_UTF8


def is_heartbeat_timeout(error: BaseException | None) -> bool:
    """Whether a websocket's exception is aiohttp's "No PONG received" (not, say, a
    close handshake that timed out)."""
    return isinstance(error, TimeoutError) and "PONG" in str(error)


class TextFrameSocket(web.WebSocketResponse):
    """`web.WebSocketResponse` whose `receive()` decodes text frames as described above.

    `text_limit` is the largest text frame in bytes (`limits.text_frame_bytes`);
    `on_heartbeat_timeout()` is called when the peer did not answer a heartbeat
    ping (aiohttp then drops the connection); every other keyword goes to
    `web.WebSocketResponse`.
    """

    def __init__(
        self,
        *,
        text_limit: int,
        on_heartbeat_timeout: Callable[[], object] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(decode_text=False, **kwargs)
        self._text_limit = text_limit
        self._on_heartbeat_timeout = on_heartbeat_timeout
        self._heartbeat_counted = False

    async def receive(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (the base's signature)
        """The next message; a text frame's data is always `str`."""
        msg = await super().receive(timeout)
        if msg.type is WSMsgType.TEXT and isinstance(msg.data, bytes | bytearray):
            return WSMessage(WSMsgType.TEXT, decode_text_frame(msg.data, self._text_limit), None)
        if (
            not self._heartbeat_counted
            and msg.type in (WSMsgType.ERROR, WSMsgType.CLOSED, WSMsgType.CLOSING)
            and is_heartbeat_timeout(self.exception())
            and self._on_heartbeat_timeout is not None
        ):
            self._heartbeat_counted = True
            self._on_heartbeat_timeout()
        return msg
