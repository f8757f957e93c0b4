"""Client messages for a request that runs on another instance, over Redis pub/sub.

    resuming instance: relay(key, message) ─► GET {stream}:fence (the owner's token,
        `{instance}:{run}`) ─► PUBLISH {prefix}inbox:{instance} ─► owner instance:
        its `Inbox` listener ─► decode ─► deliver(key, message) ─► the request's pipeline

One channel per instance, subscribed once (on its first running request) on a
connection of its own; it is resubscribed after a Redis failure. A message reaches
the owner only while it listens: PUBLISH counts the receivers, and 0 means "not
delivered" (the sender answers its client with an error). Per sending socket,
messages are published in the order the client sent them.

Wire: the message's JSON header `{"k": client key, "r": request_id, "t": type,
"b": body}` (compact JSON has no raw newline), a newline, then the audio bytes of
a binary message (none for text messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from protocol import jsoncodec
from protocol.messages import ClientMessage

log = logging.getLogger("sluice.resume")

RETRY_SECONDS = 1.0
"""Wait before subscribing again after Redis failed."""
POLL_SECONDS = 0.5
"""Longest wait for a message before the listener checks whether it is stopping
(redis-py's `get_message` can swallow a task's cancellation)."""

Deliver = Callable[[str, ClientMessage], None]
"""(client key, message) -> hands it to the request's running pipeline, if any."""


def encode_message(key: str, message: ClientMessage) -> bytes:
    """A client message of client key `key` -> the bytes published to its owner."""
    header = jsoncodec.dumps(
        {"k": key, "r": message.request_id, "t": message.type, "b": message.body}
    )
    return header + b"\n" + (message.audio or b"")


def decode_message(data: bytes) -> tuple[str, ClientMessage] | None:
    """Published bytes -> (client key, message), or None when they are not one."""
    header, sep, audio = data.partition(b"\n")
    try:
        fields: Any = jsoncodec.loads(header)
    except ValueError:
        return None
    if not sep or not isinstance(fields, dict):
        return None
    key, request_id, kind, body = fields.get("k"), fields.get("r"), fields.get("t"), fields.get("b")
    if not (
        isinstance(key, str)
        and isinstance(request_id, str)
        and isinstance(kind, str)
        and isinstance(body, dict)
    ):
        return None
    return key, ClientMessage(request_id, kind, body, audio if audio else None)


def owner_of(token: bytes) -> str:
    """A fencing token `{instance}:{run}` -> the instance that holds it."""
    return token.decode("utf-8", "replace").rsplit(":", 1)[0]


class Inbox:
    """This instance's channel: messages published to it reach `deliver`."""

    def __init__(self, redis: Redis, channel: str, deliver: Deliver) -> None:
        self._redis = redis
        self.channel = channel
        self._deliver = deliver
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self.received = 0
        self._stopping = False

    def start(self) -> None:
        """Subscribe (once; idempotent) and listen until `aclose`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        failing = False
        while not self._stopping:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.listening.set()
                if failing:
                    log.info("resume inbox listening again", extra={"channel": self.channel})
                    failing = False
                while not self._stopping:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=POLL_SECONDS
                    )
                    if message is not None and message.get("type") == "message":
                        self._handle(message["data"])
            except (RedisError, OSError) as error:
                self.listening.clear()
                if not failing:
                    log.warning(
                        "resume inbox: Redis failed; messages relayed from other instances "
                        "cannot reach this one until it is back",
                        extra={"channel": self.channel, "error": str(error)},
                    )
                    failing = True
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await pubsub.aclose()

    def _handle(self, data: Any) -> None:
        decoded = decode_message(data) if isinstance(data, bytes) else None
        if decoded is None:
            log.warning("resume inbox: a message that is not one", extra={"channel": self.channel})
            return
        self.received += 1
        self._deliver(*decoded)

    async def aclose(self) -> None:
        """Stop listening."""
        self._stopping = True
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=POLL_SECONDS + RETRY_SECONDS)
            self._task = None
