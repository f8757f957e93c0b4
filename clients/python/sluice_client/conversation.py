"""A conversation on an agent router's converse socket: the user's side in (audio and
control messages), the agent's side out (events and reply audio).

    talk = sluice.converse("assistant", mic_frames)   # or push: talk.send_audio(frame)
    talk.played(ms) ... talk.text("...") ... talk.end()
    async for item in talk:   # bytes: reply audio | SpeechStarted | Transcript | ...

Conversations share their router's socket with each other (one per request_id), like
the other endpoints' requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from sluice_client.converse_events import parse_converse_event
from sluice_client.errors import Cancelled
from sluice_client.events import Event
from sluice_client.request import RequestHandle
from sluice_client.streams import next_event, pump_audio


def _with(message: dict[str, Any], **optional: Any) -> dict[str, Any]:
    message.update({k: v for k, v in optional.items() if v is not None})
    return message


class Conversation:
    """One conversation: send the user's side with its methods, iterate it (once) for
    the agent's. Use as `async with` to cancel it if the block ends while it runs."""

    def __init__(self, handle: RequestHandle, audio: AsyncIterable[bytes] | None = None) -> None:
        self._handle = handle
        self._events = self._read()
        if audio is not None:
            handle.attach_pump(asyncio.create_task(pump_audio(handle, audio)))

    @property
    def request_id(self) -> str:
        """The conversation's request_id."""
        return self._handle.id

    @property
    def ended(self) -> bool:
        """Whether the conversation is over (its terminal frame or error came, or it was
        cancelled)."""
        return self._handle.ended

    # ---- the user's side -----------------------------------------------------------

    def send_audio(self, audio: bytes) -> None:
        """The user's audio, any chunk size, in the conversation's `format`."""
        if audio:
            self._handle.send_audio(audio)

    async def writable(self) -> None:
        """Wait until the outbox is below its high-water mark (push-API back-pressure:
        `await talk.writable()` before `send_audio` when the socket may be slow)."""
        await self._handle.writable()

    def played(self, ms: float) -> None:
        """Report playback: `ms` of the conversation's reply audio played so far (counted
        from its first reply byte, across turns, without dropped audio). Send it every
        few hundred ms while playing, so a barge-in keeps exactly what the user heard."""
        self._handle.send_json({"type": "played", "ms": max(0, round(ms))})

    def text(self, text: str, *, respond: bool | None = None) -> None:
        """A typed user turn, answered at once when no reply runs (`respond=False` only
        adds it to the history)."""
        self._handle.send_json(_with({"type": "text", "text": text}, respond=respond))

    def interrupt(self) -> None:
        """Stop the running reply, as a barge-in would."""
        self._handle.send_json({"type": "interrupt"})

    def update(
        self,
        *,
        instructions: str | None = None,
        voice: str | None = None,
        turn_detection: bool | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> None:
        """Settings for later turns (`tools=[]` removes the tools)."""
        self._handle.send_json(
            _with(
                {"type": "update"},
                instructions=instructions,
                voice=voice,
                turn_detection=turn_detection,
                tools=None if tools is None else [dict(t) for t in tools],
                tool_choice=tool_choice
                if isinstance(tool_choice, str | None)
                else dict(tool_choice),
            )
        )

    def tool_result(self, call_id: str, output: str, *, respond: bool | None = None) -> None:
        """The output of a call of the last reply's `ToolCalls`; when every call has its
        result (and `respond` is not False) the reply to them starts."""
        self._handle.send_json(
            _with({"type": "tool_result", "call_id": call_id, "output": output}, respond=respond)
        )

    def commit(self) -> None:
        """Turn detection off: the audio since the last commit is one user turn."""
        self._handle.send_json({"type": "commit"})

    def clear(self) -> None:
        """Turn detection off: drop the audio since the last commit."""
        self._handle.send_json({"type": "clear"})

    def respond(self, *, instructions: str | None = None) -> None:
        """Reply now to the history (its last message must be the user's or a tool result)."""
        self._handle.send_json(_with({"type": "respond"}, instructions=instructions))

    def end(self) -> None:
        """The input is over: what was said is answered, then the iteration ends with `Done`."""
        self._handle.send_json({"type": "end"})

    def cancel(self) -> None:
        """End the conversation at once (`cancel` to the server); the iteration raises
        `Cancelled`. No-op once it has ended."""
        self._handle.cancel(Cancelled("the conversation was cancelled", request_id=self._handle.id))

    # ---- the agent's side ----------------------------------------------------------

    async def _read(self) -> AsyncGenerator[Event | bytes, None]:
        handle = self._handle
        try:
            while True:
                item, last = await next_event(handle, parse_converse_event)
                yield item
                if last:
                    return
        finally:
            handle.close()

    def __aiter__(self) -> AsyncIterator[Event | bytes]:
        """The agent's side: reply audio (`bytes`, PCM16 mono), `SpeechStarted`,
        `SpeechEnded`, `Transcript`, `UserTurn`, `ReplyStarted`, `ReplyText`,
        `SpeakSegment`, `ToolCalls`, `ReplyInterrupted`, `TurnEnded`, `ModelReset` /
        `Notice` (non-terminal errors), and finally `Done`. A terminal error raises its
        `SluiceError`; leaving the loop early cancels the conversation."""
        return self._events

    async def aclose(self) -> None:
        """Stop: the conversation is cancelled on the server if it still runs."""
        await self._events.aclose()
        self._handle.close()

    async def __aenter__(self) -> Conversation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
