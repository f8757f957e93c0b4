"""The Redis connection of one worker process, and whether Redis is up.

    RedisLink(config).start()   -> first connection attempt; a watcher task after
    await link.run(op)          -> op(redis)'s result, or `StateUnavailable` at once
                                   while Redis is down (the caller uses local state)

Nothing on a request path ever waits for a reconnect: a failed or slow command
(`command_timeout`) marks the link down, wakes the watcher and raises
`StateUnavailable`; the watcher pings every `reconnect_interval` and, once Redis
answers, marks it up and runs the `on_up` callbacks (which put this instance's
state back: a restarted Redis may have lost everything). Each change is logged
once, naming the URL without its password, and reported to `on_change` (the
`/metrics` gauge).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.models import RedisStateConfig

log = logging.getLogger("sluice.state")

T = TypeVar("T")
OnUp = Callable[[], Awaitable[None]]


class StateUnavailable(Exception):
    """Redis is down (or a command failed): go on with this instance's local state."""


def safe_url(url: str) -> str:
    """A Redis URL in; the same URL with any password replaced by `***` out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def instance_name() -> str:
    """A name no other process shares: host, pid and a random tail."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class RedisLink:
    """One `redis.asyncio` client (its own connection pool) and its up/down state."""

    def __init__(
        self,
        config: RedisStateConfig,
        *,
        on_change: Callable[[bool], None] | None = None,
        instance: str | None = None,
    ) -> None:
        self.config = config
        self.url = safe_url(config.url)
        self.instance = instance or instance_name()
        self.redis: Redis = Redis.from_url(
            config.url,
            socket_connect_timeout=config.connect_timeout,
            retry_on_timeout=False,
        )
        self.up = False
        self._on_change = on_change
        self._on_up: list[OnUp] = []
        self._on_tick: list[OnUp] = []
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._announced: bool | None = None

    def key(self, *parts: str) -> str:
        """Key parts in; the key under `state.redis.key_prefix` out."""
        return self.config.key_prefix + ":".join(parts)

    def on_up(self, callback: OnUp) -> None:
        """Run `callback` every time Redis comes (back) up, before it counts as up."""
        self._on_up.append(callback)

    def on_tick(self, callback: OnUp) -> None:
        """Run `callback` every `reconnect_interval` while Redis is up (heartbeats)."""
        self._on_tick.append(callback)

    async def start(self) -> None:
        """Try to connect once (bounded by `connect_timeout`), then keep watching."""
        await self._check()
        self._watcher = asyncio.create_task(self._watch(), name="sluice-redis-watch")

    async def run(self, op: Callable[[Redis], Awaitable[T]]) -> T:
        """`op(redis)`'s result within `command_timeout`; `StateUnavailable` when Redis
        is down or the command fails (which marks it down)."""
        if not self.up:
            raise StateUnavailable(self.url)
        try:
            async with asyncio.timeout(self.config.command_timeout):
                return await op(self.redis)
        except (RedisError, OSError, TimeoutError) as error:
            self._down(error)
            raise StateUnavailable(self.url) from error

    def _down(self, error: BaseException) -> None:
        self.up = False
        self._wake.set()
        self._announce(False, error)

    def _announce(self, up: bool, error: BaseException | None = None) -> None:
        if self._announced is up:
            return
        first, self._announced = self._announced is None, up
        if up:
            level = logging.INFO if first else logging.WARNING
            log.log(level, "state store up", extra={"store": "redis", "url": self.url})
        else:
            log.error(
                "state store down: serving on this instance's local state until it is back",
                extra={
                    "store": "redis",
                    "url": self.url,
                    "error": f"{type(error).__name__}: {error}" if error else None,
                },
            )
        if self._on_change is not None:
            self._on_change(up)

    async def _check(self) -> None:
        # asyncio.timeout, not wait_for: a cancelled wait_for can hang on 3.11
        try:
            async with asyncio.timeout(self.config.connect_timeout + self.config.command_timeout):
                await self.redis.ping()
            if not self.up:
                for callback in self._on_up:
                    async with asyncio.timeout(self.config.connect_timeout * 5):
                        await callback()
                self.up = True
                self._announce(True)
            for callback in self._on_tick:
                async with asyncio.timeout(self.config.connect_timeout * 5):
                    await callback()
        except Exception as error:  # the watcher must outlive any failure
            self._down(error)

    async def _watch(self) -> None:
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.reconnect_interval):
                    await self._wake.wait()
            if self._wake.is_set():
                # a command just failed: give Redis a moment before the first retry
                await asyncio.sleep(min(0.1, self.config.reconnect_interval))
            await self._check()

    async def aclose(self) -> None:
        """Stop watching and close the connections."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
