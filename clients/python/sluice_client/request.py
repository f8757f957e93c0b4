"""One request's client-side state: its outbox, its replay log and its inbox.

caller ─► send_json / send_audio ─► outbox (written by its socket's writer task)
                                  └► replay log (kept until the first frame comes back)
socket reader ─► deliver / finish / fail ─► inbox ─► next() ─► caller

A request that has received no frame yet keeps everything it sent, so its
connection can put it on a new socket from the start (`rewind`). The first
frame (`mark_started`) drops that log: from then on only the caller may retry.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from sluice_client.audio_tail import AudioTail
from sluice_client.framing import encode_audio

Payload = str | bytes
"""One websocket message: a JSON text frame or a binary audio frame."""

Item = Mapping[str, Any] | bytes | BaseException
"""What a request's inbox holds: a text frame, audio, or the failure that ended it."""


class Owner(Protocol):
    """The connection a request lives on (see `sluice_client.connection.Connection`)."""

    def kick(self, request: RequestHandle) -> None:
        """The request has queued payloads: get them written."""

    def forget(self, request: RequestHandle) -> None:
        """The caller is done with the request: stop tracking it."""


class RequestHandle:
    """A request in flight on one endpoint, from the first message to its terminal frame."""

    def __init__(
        self, request_id: str, owner: Owner, *, max_replay_bytes: int, high_water: int
    ) -> None:
        self.id = request_id
        self.owner = owner
        self.socket: object | None = None
        """The socket the request is on now (None while it waits for one)."""
        self.sends = 0
        """How many sockets the request was put on."""
        self.resumes = 0
        """How many times the request was resumed on a new socket."""
        self.started = False
        self.ended = False
        self.last_seq: int | None = None
        """The `seq` of the last frame received (binary frames count one each); what
        a `resume` continues after. None until a frame came."""
        self.pending_since: float | None = None
        self.queued: deque[Payload] = deque()
        self._replay: list[Payload] | None = []
        self._replay_bytes = 0
        self._max_replay_bytes = max_replay_bytes
        self._high_water = high_water
        self._inbox: asyncio.Queue[Item] = asyncio.Queue()
        self._writable = asyncio.Event()
        self._writable.set()
        self._pumps: list[asyncio.Task[None]] = []
        self.tail: AudioTail | None = None
        """A listen request's unacknowledged audio, sent again after a resume."""
        self._end_sent = False

    @property
    def resendable(self) -> bool:
        """Whether the request can start over on another socket (no frame seen, log kept)."""
        return not self.started and not self.ended and self._replay is not None

    def send_json(self, message: Mapping[str, Any]) -> None:
        """Queue a JSON message (request_id added) for the server."""
        if message.get("type") == "end":
            self._end_sent = True
        self.enqueue(json.dumps({**message, "request_id": self.id}, separators=(",", ":")))

    def send_audio(self, audio: bytes) -> None:
        """Queue audio as a binary frame tagged with this request's id."""
        if self.tail is not None:
            self.tail.add(audio)
        self.enqueue(encode_audio(self.id, audio))

    def enqueue(self, payload: Payload, *, replay: bool = True) -> None:
        """Queue one payload; keep it for a resend unless `replay` is False."""
        if self.ended:
            return
        if replay:
            self._record(payload)
        self.queued.append(payload)
        if len(self.queued) >= self._high_water:
            self._writable.clear()
        self.owner.kick(self)

    def _record(self, payload: Payload) -> None:
        if self._replay is None:
            return
        self._replay_bytes += len(payload)
        if self._replay_bytes > self._max_replay_bytes:
            self._replay = None
        else:
            self._replay.append(payload)

    def next_payload(self) -> Payload | None:
        """The writer takes the next queued payload (None when the outbox is empty)."""
        if not self.queued:
            return None
        payload = self.queued.popleft()
        if len(self.queued) < self._high_water:
            self._writable.set()
        return payload

    async def writable(self) -> None:
        """Wait until the outbox is below its high-water mark (or the request ended)."""
        while not self._writable.is_set() and not self.ended:
            await self._writable.wait()

    def rewind(self) -> None:
        """Before a resend: the outbox becomes everything the request ever sent."""
        assert self._replay is not None
        self.queued = deque(self._replay)
        if len(self.queued) < self._high_water:
            self._writable.set()
        else:
            self._writable.clear()

    def resume_next(self) -> None:
        """Before a resume: the outbox starts with `resume` after `last_seq`; input
        queued but not yet written follows it (the server hands it to the request)."""
        self.resumes += 1
        message = {"type": "resume", "request_id": self.id, "after_seq": self.last_seq or 0}
        tail = self.tail
        if tail is not None:
            # listen: the audio after the last point the server reported goes again,
            # behind its offset (the server skips what it has; queued audio is part
            # of it), then the rest of the queue, and `end` again if it was written
            offset, chunks = tail.unheard()
            rest = [p for p in self.queued if not isinstance(p, bytes)]
            self.queued = deque([self._json({"type": "audio_offset", "offset": offset})])
            self.queued.extend(encode_audio(self.id, chunk) for chunk in chunks)
            self.queued.extend(rest)
            if self._end_sent and not rest:
                self.queued.append(self._json({"type": "end"}))
        self.queued.appendleft(json.dumps(message, separators=(",", ":")))
        if len(self.queued) >= self._high_water:
            self._writable.clear()

    def _json(self, message: dict[str, Any]) -> str:
        return json.dumps({**message, "request_id": self.id}, separators=(",", ":"))

    def mark_started(self) -> None:
        """A frame came back: the request can no longer be resent transparently."""
        self.started = True
        self._replay = None
        self._replay_bytes = 0

    def deliver(self, item: Mapping[str, Any] | bytes) -> None:
        """A non-terminal frame or audio for the caller."""
        if not self.ended and self._note_seq(item):
            self._inbox.put_nowait(item)

    def _note_seq(self, item: Mapping[str, Any] | bytes) -> bool:
        """Count the frame; False for one already seen (a seq at or below the last)."""
        if isinstance(item, Mapping):
            if self.tail is not None:
                self._heard(item)
            seq = item.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                if self.last_seq is not None and seq <= self.last_seq:
                    return False
                self.last_seq = seq
        else:
            self.last_seq = (self.last_seq or 0) + 1
        return True

    def _heard(self, frame: Mapping[str, Any]) -> None:
        """A listen frame that says how far the server has the audio."""
        kind = frame.get("type")
        end_ms = frame.get("end_ms")
        if kind not in ("transcript", "speech_ended"):
            return
        if not isinstance(end_ms, int | float) or isinstance(end_ms, bool):
            return
        assert self.tail is not None
        self.tail.heard(end_ms, kind == "transcript" and frame.get("is_final") is True)

    def finish(self, frame: Mapping[str, Any]) -> None:
        """The terminal frame: deliver it; nothing else is delivered after it."""
        if not self.ended:
            self._note_seq(frame)
            self._inbox.put_nowait(frame)
            self._end()

    def fail(self, error: BaseException) -> None:
        """End the request with `error` (raised to the caller); no-op if it already ended."""
        if not self.ended:
            self._inbox.put_nowait(error)
            self._end()

    def _end(self) -> None:
        self.ended = True
        self._writable.set()

    async def next(self) -> Item:
        """The next item for the caller: a frame, audio, or the error that ended the request."""
        return await self._inbox.get()

    def attach_pump(self, pump: asyncio.Task[None]) -> None:
        """Own an input task: its failure ends the request, closing the request cancels it."""
        self._pumps.append(pump)
        pump.add_done_callback(self._pump_done)

    def _pump_done(self, pump: asyncio.Task[None]) -> None:
        if pump.cancelled():
            return
        error = pump.exception()
        if error is not None:
            self.fail(error)

    def cancel(self, error: BaseException) -> None:
        """The caller ends the request at once: `cancel` to the server (if it runs on a
        socket), `error` to whoever reads the request; no-op if it already ended."""
        if self.ended:
            return
        for pump in self._pumps:
            pump.cancel()
        self._inbox.put_nowait(error)
        self._end()
        self._send_cancel()

    def close(self) -> None:
        """The caller stops listening: cancel the request on the server if it still runs."""
        for pump in self._pumps:
            pump.cancel()
        if not self.ended:
            self._end()
            self._send_cancel()
        self.owner.forget(self)

    def _send_cancel(self) -> None:
        if self.socket is not None:
            self.queued.clear()
            self.queued.append(
                json.dumps({"type": "cancel", "request_id": self.id}, separators=(",", ":"))
            )
            self.owner.kick(self)
