"""`RedisLimits`: per-key socket caps and request rates counted across instances.

    admit_socket(key)          -> one EVALSHA (SOCKET_SCRIPT): cap check + count, atomic
    admit_request(key, now)    -> one EVALSHA (BUCKET_SCRIPT): token bucket step, atomic
    release_socket(key)        -> one HINCRBY -1, not awaited by the caller
    refund_request(key)        -> one EVALSHA (REFUND_SCRIPT), not awaited (rare)

Keys (under `state.redis.key_prefix`):

    limits:sockets:{key}   hash  instance -> websockets of `key` it holds open
    limits:instances       hash  instance -> its expiry (Redis ms clock)
    limits:rate:{key}      hash  level, at (Redis seconds clock); expires when idle

Sockets are counted per instance so that a crashed instance's sockets stop
counting once it has not been heard of for `instance_ttl` (every instance
refreshes its expiry each `reconnect_interval` and on each admission). The
server-wide `limits.max_sockets` stays per instance (it protects this process),
so it is checked in the local store first, which also keeps every count this
instance needs when Redis goes away.

Redis down: every call answers from the local store (`LocalLimits`, or the
workers' `SharedLimits`) at once: caps hold per instance. When Redis is back,
before it is used again, this instance writes its open sockets per key (absolute
counts, so a Redis restarted empty or counts missed meanwhile are put right).
Token buckets use Redis's clock (`TIME`), so instances whose clocks differ agree.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis

from security.limits import ANONYMOUS, LimitPolicy, LimitStore, SocketCap
from state.link import RedisLink, StateUnavailable

log = logging.getLogger("sluice.limits")

SOCKET_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[3]))
local counts = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #counts, 2 do
  local instance = counts[i]
  local alive = instance == ARGV[1]
  if not alive then
    local expiry = redis.call('HGET', KEYS[2], instance)
    alive = expiry ~= false and tonumber(expiry) > now
  end
  if alive then
    local n = tonumber(counts[i + 1])
    if n > 0 then total = total + n end
  else
    redis.call('HDEL', KEYS[1], instance)
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"""
"""KEYS: sockets hash of the key, instances hash. ARGV: instance, cap, instance ttl ms.
1 = counted, 0 = the key's cap refused it."""

BUCKET_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local capacity = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local rate = capacity / per
local v = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(v[1]) or capacity
local at = tonumber(v[2]) or now
if now > at then
  level = math.min(capacity, level + (now - at) * rate)
  at = now
end
local wait = -1
if level >= 1 - 1e-9 then
  level = math.max(0, level - 1)
else
  wait = math.max(0.001, (1 - level) / rate)
end
redis.call('HSET', KEYS[1], 'level', string.format('%.17g', level),
  'at', string.format('%.17g', at))
redis.call('PEXPIRE', KEYS[1], math.ceil(per * 2000) + 1000)
return string.format('%.17g', wait)
"""
"""KEYS: the key's bucket. ARGV: requests, per seconds. '-1' = admitted, else seconds."""

REFUND_SCRIPT = """
local v = redis.call('HGET', KEYS[1], 'level')
if v then
  local level = math.min(tonumber(ARGV[1]), tonumber(v) + 1)
  redis.call('HSET', KEYS[1], 'level', string.format('%.17g', level))
end
return 1
"""

HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then redis.call('HDEL', KEYS[1], all[i]) end
end
return 1
"""
"""KEYS: instances hash. ARGV: instance, ttl ms. Refreshes it, forgets the expired."""


class RedisLimits:
    """A `LimitStore` (and `AsyncAdmission`) over Redis, falling back to `local`."""

    def __init__(self, link: RedisLink, local: LimitStore) -> None:
        self._link = link
        self._local = local
        self._open: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ttl_ms = int(link.config.instance_ttl * 1000)
        self._instances = link.key("limits", "instances")
        redis = link.redis
        self._socket = redis.register_script(SOCKET_SCRIPT)
        self._bucket = redis.register_script(BUCKET_SCRIPT)
        self._refund = redis.register_script(REFUND_SCRIPT)
        self._heartbeat = redis.register_script(HEARTBEAT_SCRIPT)
        link.on_up(self._resync)
        link.on_tick(self._beat)

    # ---- LimitStore (synchronous: the local fallback) ------------------------------

    @property
    def policy(self) -> LimitPolicy:
        """The limits this store enforces."""
        return self._local.policy

    def set_policy(self, policy: LimitPolicy) -> None:
        """A config reload's limits in: the local store takes them, and Redis gets this
        instance's socket counts again (a key may have gained a cap)."""
        self._local.set_policy(policy)
        if self._link.up:
            self._spawn(self._link.run(lambda _: self._resync()))

    def take_socket(self, key_id: str) -> SocketCap | None:
        """Counted locally only (callers that can await use `admit_socket`)."""
        refused = self._local.take_socket(key_id)
        if refused is None:
            key = self._key(key_id)
            self._open[key] = self._open.get(key, 0) + 1
        return refused

    def release_socket(self, key_id: str) -> None:
        """One websocket of `key_id` closed: uncounted here at once, in Redis soon."""
        self._local.release_socket(key_id)
        key = self._key(key_id)
        self._open[key] = max(0, self._open.get(key, 0) - 1)
        if self._link.up and self.policy.of(key).max_sockets is not None:
            hash_key = self._sockets_key(key)
            instance = self._link.instance
            self._spawn(self._link.run(lambda r: r.hincrby(hash_key, instance, -1)))

    def take_request(self, key_id: str, now: float) -> float | None:
        """Counted locally only (callers that can await use `admit_request`)."""
        return self._local.take_request(key_id, now)

    # ---- AsyncAdmission ------------------------------------------------------------

    async def admit_socket(self, key_id: str) -> SocketCap | None:
        """The server cap and the key's cap on this instance, then the key's cap over
        every instance (one round trip); the local count alone while Redis is down."""
        refused = self.take_socket(key_id)
        if refused is not None:
            return refused
        key = self._key(key_id)
        cap = self.policy.of(key).max_sockets
        if cap is None or not self._link.up:
            return None
        keys = [self._sockets_key(key), self._instances]
        args: list[str | int] = [self._link.instance, cap, self._ttl_ms]
        try:
            counted = await self._link.run(lambda _: self._socket(keys=keys, args=args))
        except StateUnavailable:
            return None
        if counted == 1:
            return None
        self._local.release_socket(key_id)
        self._open[key] = max(0, self._open.get(key, 0) - 1)
        return SocketCap.KEY

    async def admit_request(self, key_id: str, now: float) -> float | None:
        """One token of the key's rate, from the bucket every instance shares (one
        round trip); from this instance's bucket while Redis is down."""
        key = key_id if key_id in self.policy.keys else ANONYMOUS
        limit = self.policy.of(key).rate_limit
        if limit is None:
            return None
        if not self._link.up:
            return self._local.take_request(key_id, now)
        keys = [self._rate_key(key)]
        args = [limit.requests, limit.per_seconds]
        try:
            answer = await self._link.run(lambda _: self._bucket(keys=keys, args=args))
        except StateUnavailable:
            return self._local.take_request(key_id, now)
        wait = float(answer)
        return None if wait < 0 else wait

    def refund_request(self, key_id: str) -> None:
        """Give back a token `admit_request` took (the request was refused after it)."""
        key = key_id if key_id in self.policy.keys else ANONYMOUS
        limit = self.policy.of(key).rate_limit
        if limit is None or not self._link.up:
            return
        keys, args = [self._rate_key(key)], [limit.requests]
        self._spawn(self._link.run(lambda _: self._refund(keys=keys, args=args)))

    # ---- Redis bookkeeping ---------------------------------------------------------

    async def _resync(self) -> None:
        """Write this instance's open sockets per key (absolute) and its expiry."""
        redis: Redis = self._link.redis
        instance = self._link.instance
        async with redis.pipeline(transaction=False) as pipe:
            for key, count in self._open.items():
                if self.policy.of(key).max_sockets is not None:
                    pipe.hset(self._sockets_key(key), instance, count)
            await pipe.execute()
        await self._beat()

    async def _beat(self) -> None:
        await self._heartbeat(keys=[self._instances], args=[self._link.instance, self._ttl_ms])

    async def aclose(self) -> None:
        """Forget this instance's sockets in Redis (a clean stop) and end pending calls."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self._link.up:
            return
        instance = self._link.instance
        keys = [self._sockets_key(key) for key in self._open]

        async def forget(redis: Redis) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                for hash_key in keys:
                    pipe.hdel(hash_key, instance)
                pipe.hdel(self._instances, instance)
                await pipe.execute()

        try:
            await self._link.run(forget)
        except StateUnavailable:
            pass

    def _spawn(self, call: Any) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(_quiet(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _key(self, key_id: str) -> str:
        return key_id if key_id in self.policy.keys else ANONYMOUS

    def _sockets_key(self, key: str) -> str:
        return self._link.key("limits", "sockets", key)

    def _rate_key(self, key: str) -> str:
        return self._link.key("limits", "rate", key)


async def _quiet(call: Any) -> None:
    try:
        await call
    except StateUnavailable:
        pass  # the link logged it; the resync on reconnect puts counts right
