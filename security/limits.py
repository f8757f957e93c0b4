"""Per-key and server-wide limit state: open websockets and request tokens.

A `LimitPolicy` (built once from `auth` and `limits`) says what each client key may
use; a `LimitStore` holds the state those limits are counted in:

    take_socket(key_id)        -> None (counted) | SocketCap (which cap refused)
    release_socket(key_id)     -> None (one of the key's websockets closed)
    take_request(key_id, now)  -> None (admitted) | seconds until a token is back

`LocalLimits` keeps the state in this process (`--workers 1`, tests);
`security.shared_limits.SharedLimits` keeps it in shared memory so the caps hold
across every worker process of one server. A store for many machines
(`state.limits.RedisLimits`, with `state.redis`) fits the same calls and adds
their awaitable forms (`AsyncAdmission`): one Redis round trip per admission.
`now` is wall-clock seconds (the app scheduler's clock), the one clock every
process on a machine agrees on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from config.models import AuthConfig, LimitsConfig, RateLimit

ANONYMOUS = "anonymous"
"""The key id every unauthenticated caller shares."""

_EPSILON = 1e-9


class SocketCap(StrEnum):
    """Which cap refused a websocket."""

    SERVER = "server"
    KEY = "key"


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """One key's request rate (None: unlimited) and websocket cap (None: unlimited)."""

    rate_limit: RateLimit | None
    max_sockets: int | None


@dataclass(frozen=True)
class LimitPolicy:
    """The server-wide socket cap and every key's limits (`anonymous` included)."""

    max_sockets: int
    keys: dict[str, KeyLimits]

    @classmethod
    def build(cls, auth: AuthConfig, limits: LimitsConfig) -> LimitPolicy:
        """Config in, the limits of `anonymous` and of each configured key out."""
        keys = {ANONYMOUS: KeyLimits(limits.rate_limit, limits.max_sockets_per_key)}
        for key in auth.keys:
            keys[key.id] = KeyLimits(
                key.rate_limit or limits.rate_limit, key.max_sockets or limits.max_sockets_per_key
            )
        return cls(limits.max_sockets, keys)

    def of(self, key_id: str) -> KeyLimits:
        """The limits of `key_id` (an unknown id gets the anonymous ones)."""
        return self.keys.get(key_id) or self.keys[ANONYMOUS]


class LimitStore(Protocol):
    """Where sockets and request tokens are counted (see the module docstring)."""

    @property
    def policy(self) -> LimitPolicy:
        """The limits this store enforces."""
        ...

    def take_socket(self, key_id: str) -> SocketCap | None:
        """Count one more websocket for `key_id`; the refusing cap (nothing counted) at a cap."""
        ...

    def release_socket(self, key_id: str) -> None:
        """One websocket of `key_id` closed."""
        ...

    def take_request(self, key_id: str, now: float) -> float | None:
        """Admit one request of `key_id` at `now` (None), or the seconds to wait for a token."""
        ...

    def set_policy(self, policy: LimitPolicy) -> None:
        """A config reload's limits in: counts of open websockets carry over, a
        surviving key keeps its bucket (refilled at its new rate), a new key starts full."""
        ...


@runtime_checkable
class AsyncAdmission(Protocol):
    """A `LimitStore` whose counts live elsewhere (Redis): admissions are awaited.

    `admit_socket` / `admit_request` answer as `take_socket` / `take_request` do;
    `refund_request` gives back a token taken for a request that was then refused
    for another reason."""

    async def admit_socket(self, key_id: str) -> SocketCap | None:
        """Count one more websocket for `key_id`; the refusing cap (nothing counted) at a cap."""
        ...

    async def admit_request(self, key_id: str, now: float) -> float | None:
        """Admit one request of `key_id` (None), or the seconds to wait for a token."""
        ...

    def refund_request(self, key_id: str) -> None:
        """Give back one token `admit_request` took for `key_id`."""
        ...


def bucket_take(
    level: float, updated: float, limit: RateLimit, now: float
) -> tuple[float, float, float | None]:
    """One token-bucket step: (level, last refill time, `limit`, now) in;
    (new level, new refill time, None if a token was taken else seconds to wait) out.

    The bucket holds `limit.requests` tokens and refills at `requests / per_seconds`;
    a `now` earlier than the last refill counts as no time.
    """
    capacity = float(limit.requests)
    rate = capacity / limit.per_seconds
    if now > updated:
        level = min(capacity, level + (now - updated) * rate)
        updated = now
    if level >= 1.0 - _EPSILON:
        return max(0.0, level - 1.0), updated, None
    return level, updated, max(0.001, (1.0 - level) / rate)


class LocalLimits:
    """A `LimitStore` in this process's memory: one event loop, no locking needed."""

    def __init__(self, policy: LimitPolicy) -> None:
        self._policy = policy
        self._total = 0
        self._sockets = dict.fromkeys(policy.keys, 0)
        self._buckets: dict[str, tuple[float, float]] = {}
        self.set_policy(policy)

    @property
    def policy(self) -> LimitPolicy:
        """The limits this store enforces."""
        return self._policy

    def set_policy(self, policy: LimitPolicy) -> None:
        """A config reload's limits in: counts of open websockets carry over, a
        surviving key keeps its bucket (refilled at its new rate), a new key starts full.

        A removed key keeps its socket count, so its sockets still open are
        released against it (never against `anonymous`)."""
        self._policy = policy
        for key in policy.keys:
            self._sockets.setdefault(key, 0)
        # a bucket starts full; its first `now` only refills it
        self._buckets = {
            key: self._buckets.get(key, (float(lim.rate_limit.requests), 0.0))
            for key, lim in policy.keys.items()
            if lim.rate_limit is not None
        }

    def take_socket(self, key_id: str) -> SocketCap | None:
        """Count one more websocket for `key_id`; the refusing cap (nothing counted) at a cap."""
        key = key_id if key_id in self._sockets else ANONYMOUS
        if self._total >= self._policy.max_sockets:
            return SocketCap.SERVER
        cap = self._policy.of(key).max_sockets
        if cap is not None and self._sockets[key] >= cap:
            return SocketCap.KEY
        self._total += 1
        self._sockets[key] += 1
        return None

    def release_socket(self, key_id: str) -> None:
        """One websocket of `key_id` closed."""
        key = key_id if key_id in self._sockets else ANONYMOUS
        self._total = max(0, self._total - 1)
        self._sockets[key] = max(0, self._sockets[key] - 1)

    def take_request(self, key_id: str, now: float) -> float | None:
        """Admit one request of `key_id` at `now` (None), or the seconds to wait for a token.

        A key removed by a reload (its sockets still open) is limited as `anonymous`."""
        key = key_id if key_id in self._policy.keys else ANONYMOUS
        limit = self._policy.of(key).rate_limit
        if limit is None:
            return None
        level, updated = self._buckets[key]
        level, updated, wait = bucket_take(level, updated, limit, now)
        self._buckets[key] = (level, updated)
        return wait
