"""`SluiceClient`: the async Python client of Sluice's websocket endpoints.

    async with SluiceClient("http://sluice:9099") as sluice:
        async for event in sluice.chat_stream("default", "Hello"):
            ...

One websocket per endpoint (chatStream of a router, speak, listen, converse), opened on
first use and shared by every request to it; reconnection, transparent resends
and backoff live in `sluice_client.connection`.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp

from sluice_client.audio_tail import AudioTail
from sluice_client.connection import Connection
from sluice_client.conversation import Conversation
from sluice_client.errors import ClientClosed
from sluice_client.events import ChatChunk, Event, ModelReset, Transcript
from sluice_client.messages import (
    AudioFormat,
    chat_message,
    converse_message,
    listen_message,
    speak_message,
)
from sluice_client.options import ClientOptions, ClientStats
from sluice_client.streams import next_event, pump_audio, pump_text

ChatEvent = ChatChunk | ModelReset | Event
"""What `chat_stream` yields: chunks, resets, and any other non-terminal event."""


def _ws_base(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://")
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://")
    return base


class SluiceClient:
    """A client of one Sluice deployment (an instance or a load balancer in front of many).

    `base_url` is `http(s)://host:port` (or `ws(s)://`); `session` an aiohttp
    session to use (else the client owns one); `headers` go on every upgrade.
    Use as `async with`, or call `aclose()`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        options: ClientOptions | None = None,
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = _ws_base(base_url)
        self.options = options or ClientOptions()
        self.stats = ClientStats()
        self._session = session
        self._owns_session = session is None
        self._headers = dict(headers or {})
        self._rng = rng or random.Random()
        self._connections: dict[str, Connection] = {}
        self._closed = False

    async def __aenter__(self) -> SluiceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection (requests in flight end with `ClientClosed`) and the session."""
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.aclose() for c in connections), return_exceptions=True)
        if self._owns_session and self._session is not None:
            await self._session.close()

    def connection(self, path: str) -> Connection:
        """The shared connection to the endpoint at `path` (created on first use)."""
        if self._closed:
            raise ClientClosed("the client is closed")
        conn = self._connections.get(path)
        if conn is None:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            conn = Connection(
                self._session,
                self.base_url + path,
                options=self.options,
                stats=self.stats,
                rng=self._rng,
                headers=self._headers,
            )
            self._connections[path] = conn
        return conn

    async def chat_stream(
        self,
        router: str,
        message: str | Mapping[str, Any],
        *,
        message_history: Sequence[Mapping[str, Any]] | None = None,
        override_params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> AsyncIterator[ChatEvent]:
        """Stream one chat answer: a message (str = user content) in, events out.

        Yields `ChatChunk`s (the last has `finish_reason`) and `ModelReset`
        (drop the partial text and tool calls, the answer restarts on another
        model). `tools` / `tool_choice` (OpenAI's shapes) let the model call
        tools: whole calls arrive in `ChatChunk.tool_calls`. Raises a
        `SluiceError` subclass on a terminal error, `ConnectionLost` if the
        socket was cut mid-answer. Leaving the loop early cancels the request.
        """
        body = chat_message(
            message,
            message_history=message_history,
            override_params=override_params,
            metadata=metadata,
            tools=tools,
            tool_choice=tool_choice,
        )
        conn = self.connection(f"/v1/language/{router}/chatStream")
        handle = conn.open(request_id or uuid.uuid4().hex, body)
        try:
            while True:
                event, last = await next_event(handle)
                if isinstance(event, Event):
                    yield event
                if last:
                    return
        finally:
            handle.close()

    async def chat_text(self, router: str, message: str | Mapping[str, Any], **kwargs: Any) -> str:
        """The whole answer's text (after any reset), from `chat_stream` with the same arguments."""
        text: list[str] = []
        async for event in self.chat_stream(router, message, **kwargs):
            if isinstance(event, ModelReset):
                text.clear()
            elif isinstance(event, ChatChunk):
                text.append(event.content)
        return "".join(text)

    async def speak(
        self,
        router: str,
        text: str | AsyncIterable[str],
        *,
        format: AudioFormat | None = None,
        voice: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes | Event]:
        """Synthesize speech: text (or streamed pieces, e.g. an LLM's tokens) in, audio out.

        Yields audio `bytes` in the requested format, `SpeakSegment` events,
        `ModelReset` (drop the named segment's audio) and finally `Done`.
        Raises a `SluiceError` subclass on a terminal error.
        """
        whole = isinstance(text, str)
        body = speak_message(
            text=text if isinstance(text, str) else None,
            final=whole,
            format=format,
            voice=voice,
            metadata=metadata,
        )
        conn = self.connection(f"/v1/speech/{router}/speak")
        handle = conn.open(request_id or uuid.uuid4().hex, body)
        try:
            if not isinstance(text, str):
                handle.attach_pump(asyncio.create_task(pump_text(handle, text)))
            while True:
                item, last = await next_event(handle)
                yield item
                if last:
                    return
        finally:
            handle.close()

    async def listen(
        self,
        router: str,
        audio: AsyncIterable[bytes],
        *,
        format: AudioFormat,
        language: str | None = None,
        interim_results: bool | None = None,
        vad: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[Event]:
        """Transcribe speech: an async iterable of audio chunks in `format` in, events out.

        Yields `SpeechStarted`, `Transcript` (interim and final), `SpeechEnded`
        and finally `Done`. The audio is sent as it arrives, then `end`.
        Raises a `SluiceError` subclass on a terminal error.
        """
        body = listen_message(
            format=format,
            language=language,
            interim_results=interim_results,
            vad=vad,
            metadata=metadata,
        )
        conn = self.connection(f"/v1/speech/{router}/listen")
        handle = conn.open(request_id or uuid.uuid4().hex, body)
        if self.options.resume:  # keep the unacknowledged audio for a resume
            handle.tail = AudioTail.for_format(format, self.options.max_replay_bytes)
        try:
            handle.attach_pump(asyncio.create_task(pump_audio(handle, audio)))
            while True:
                event, last = await next_event(handle)
                if isinstance(event, Event):
                    yield event
                if last:
                    return
        finally:
            handle.close()

    def converse(
        self,
        router: str,
        audio: AsyncIterable[bytes] | None = None,
        *,
        format: AudioFormat | None = None,
        output_sample_rate: int | None = None,
        instructions: str | None = None,
        voice: str | None = None,
        turn_detection: bool | None = None,
        language: str | None = None,
        interim_results: bool | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Conversation:
        """Start a conversation with agent router `router` (voice in, voice out).

        The user's audio (in `format`, default PCM16 16 kHz mono) comes from `audio`,
        an async iterable sent as it arrives and followed by `end`, or is pushed with
        `Conversation.send_audio`; control messages are the conversation's methods.
        Iterate the returned `Conversation` (once) for the agent's side: reply audio
        bytes (PCM16 mono at `output_sample_rate`, default the speak router's) and
        events, ending with `Done`. The rest override the agent's settings for this
        conversation. Conversations share the router's socket.
        """
        body = converse_message(
            format=format or AudioFormat(),
            output_sample_rate=output_sample_rate,
            instructions=instructions,
            voice=voice,
            turn_detection=turn_detection,
            language=language,
            interim_results=interim_results,
            tools=tools,
            tool_choice=tool_choice,
            metadata=metadata,
        )
        conn = self.connection(f"/v1/agent/{router}/converse")
        handle = conn.open(request_id or uuid.uuid4().hex, body)
        return Conversation(handle, audio)

    async def speak_bytes(
        self,
        router: str,
        text: str | AsyncIterable[str],
        *,
        format: AudioFormat | None = None,
        voice: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> bytes:
        """The whole synthesized audio of `text` as plain bytes in `format`.

        text (or streamed pieces) in ─► `speak` ─► audio bytes out. A `ModelReset`
        naming `drop_bytes` removes that many trailing bytes first (the sentence is
        synthesized again by the next model), so the bytes returned play gaplessly.
        Raises a `SluiceError` subclass on a terminal error.
        """
        audio = bytearray()
        async for item in self.speak(
            router, text, format=format, voice=voice, metadata=metadata, request_id=request_id
        ):
            if isinstance(item, bytes):
                audio += item
            elif isinstance(item, ModelReset) and item.drop_bytes:
                del audio[max(0, len(audio) - item.drop_bytes) :]
        return bytes(audio)

    async def listen_bytes(
        self,
        router: str,
        audio: bytes,
        *,
        format: AudioFormat,
        chunk_bytes: int = 3200,
        language: str | None = None,
        vad: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> list[Transcript]:
        """The final transcripts of a whole recording given as plain bytes in `format`.

        bytes in ─► `listen` (sent in `chunk_bytes` pieces, 100 ms of 16 kHz PCM16 by
        default, then `end`) ─► the `is_final` transcripts out, in order. Raises a
        `SluiceError` subclass on a terminal error.
        """
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be at least 1")

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(audio), chunk_bytes):
                yield audio[start : start + chunk_bytes]

        return [
            event
            async for event in self.listen(
                router,
                pieces(),
                format=format,
                language=language,
                vad=vad,
                metadata=metadata,
                request_id=request_id,
            )
            if isinstance(event, Transcript) and event.is_final
        ]
