"""A `LimitStore` in shared memory, so socket caps and request rates hold across workers.

The supervisor calls `SharedLimits.create(policy, workers)` before it starts any
worker; each worker gets `store.for_worker(slot)` (passed as a process argument,
which is how shared memory and its lock reach a spawned process) and uses it like
`LocalLimits`. One array of doubles holds everything, guarded by one lock:

    [level, refilled_at] per key                 request token buckets
    [sockets, sockets of key 0..K-1] per worker  open websockets, one row per worker

A worker writes only its own row, so when it dies the supervisor calls
`reset_worker(slot)`: that worker's sockets are gone, and its row is zeroed (its
buckets' spent tokens stay spent). A worker killed while holding the lock would
stop every other worker at the next socket or request; `reset_worker` frees it.

The array is sized for the keys configured at start. A config reload
(`set_policy`) changes those keys' limits in place; a key it adds is counted in
each worker's own memory until a restart (see `set_policy`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Iterator
from multiprocessing.context import SpawnContext
from typing import Any

from security.limits import ANONYMOUS, LimitPolicy, SocketCap, bucket_take

log = logging.getLogger("sluice.limits")

LOCK_TIMEOUT = 1.0
"""Seconds a worker waits for the lock before it counts without it (and logs why)."""


class SharedLimits:
    """`LimitStore` over shared memory; one instance per worker (`for_worker`)."""

    def __init__(
        self,
        policy: LimitPolicy,
        workers: int,
        values: Any,
        lock: Any,
        slot: int = 0,
        layout: tuple[str, ...] | None = None,
    ) -> None:
        self._policy = policy
        self._workers = workers
        self._values = values
        self._lock = lock
        self._slot = slot
        # the keys the shared array was sized for, in its order (fixed for its life)
        self._layout = layout if layout is not None else tuple(policy.keys)
        self._index = {key: i for i, key in enumerate(self._layout)}
        self._keys = len(self._index)
        self._rows = 2 * self._keys
        # keys a reload added: not in the array, counted in this process only
        self._added_sockets: dict[str, int] = {}
        self._added_buckets: dict[str, tuple[float, float]] = {}

    @classmethod
    def create(
        cls, policy: LimitPolicy, workers: int, context: SpawnContext | None = None
    ) -> SharedLimits:
        """Policy and worker count in; a zeroed shared store (buckets full) out.

        Call it in the supervisor before any worker starts.
        """
        ctx = context or multiprocessing.get_context("spawn")
        keys = len(policy.keys)
        values = ctx.RawArray("d", 2 * keys + workers * (keys + 1))
        for i, key in enumerate(policy.keys):
            limit = policy.keys[key].rate_limit
            values[2 * i] = float(limit.requests) if limit is not None else 0.0
        return cls(policy, workers, values, ctx.Lock())

    def for_worker(self, slot: int) -> SharedLimits:
        """The same shared state, counting this worker's sockets in row `slot`."""
        if not 0 <= slot < self._workers:
            raise ValueError(f"worker slot {slot} is outside 0..{self._workers - 1}")
        return SharedLimits(
            self._policy, self._workers, self._values, self._lock, slot, self._layout
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            "policy": self._policy,
            "workers": self._workers,
            "values": self._values,
            "lock": self._lock,
            "slot": self._slot,
            "layout": self._layout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["policy"],
            state["workers"],
            state["values"],
            state["lock"],
            state["slot"],
            state["layout"],
        )

    @property
    def policy(self) -> LimitPolicy:
        """The limits this store enforces."""
        return self._policy

    def set_policy(self, policy: LimitPolicy) -> None:
        """A config reload's limits in (each worker applies the same file).

        The shared array keeps the keys it was sized for at start: those keys go on
        being counted across every worker, under their new limits. A key added by a
        reload is counted in this worker only (so its caps hold per worker, N times
        over with N workers) until the next restart sizes the array for it; the
        server-wide socket cap still counts its sockets across workers."""
        self._policy = policy
        added = [key for key in policy.keys if key not in self._index]
        if added and self._slot == 0:
            log.warning(
                "client keys added by a reload are rate- and socket-limited per worker "
                "until the next restart",
                extra={"keys": added, "workers": self._workers},
            )

    def _added(self, key_id: str) -> bool:
        return key_id not in self._index and key_id in self._policy.keys

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        held = self._lock.acquire(timeout=LOCK_TIMEOUT)
        if not held:
            log.error(
                "shared limits lock not released in time: counting without it",
                extra={"seconds": LOCK_TIMEOUT, "worker": self._slot},
            )
        try:
            yield
        finally:
            if held:
                self._lock.release()

    def _key(self, key_id: str) -> int:
        index = self._index.get(key_id)
        return self._index[ANONYMOUS] if index is None else index

    def _row(self, slot: int) -> int:
        return self._rows + slot * (self._keys + 1)

    def take_socket(self, key_id: str) -> SocketCap | None:
        """Count one more websocket for `key_id`; the refusing cap (nothing counted) at a cap."""
        k = self._key(key_id)
        added = self._added(key_id)
        cap = self._policy.of(key_id).max_sockets
        values = self._values
        rows = [self._row(w) for w in range(self._workers)]
        with self._locked():
            if sum(values[r] for r in rows) >= self._policy.max_sockets:
                return SocketCap.SERVER
            if added:
                if cap is not None and self._added_sockets.get(key_id, 0) >= cap:
                    return SocketCap.KEY
            elif cap is not None and sum(values[r + 1 + k] for r in rows) >= cap:
                return SocketCap.KEY
            own = self._row(self._slot)
            values[own] += 1.0
            if added:
                self._added_sockets[key_id] = self._added_sockets.get(key_id, 0) + 1
            else:
                values[own + 1 + k] += 1.0
        return None

    def release_socket(self, key_id: str) -> None:
        """One websocket of `key_id` (taken by this worker) closed."""
        k = self._key(key_id)
        own = self._row(self._slot)
        values = self._values
        added = self._added_sockets.get(key_id, 0) > 0
        with self._locked():
            values[own] = max(0.0, values[own] - 1.0)
            if added:
                self._added_sockets[key_id] -= 1
            else:
                values[own + 1 + k] = max(0.0, values[own + 1 + k] - 1.0)

    def take_request(self, key_id: str, now: float) -> float | None:
        """Admit one request of `key_id` at `now` (None), or the seconds to wait for a token."""
        limit = self._policy.of(key_id).rate_limit
        if limit is None:
            return None
        if self._added(key_id):
            level, updated = self._added_buckets.get(key_id, (float(limit.requests), 0.0))
            level, updated, wait = bucket_take(level, updated, limit, now)
            self._added_buckets[key_id] = (level, updated)
            return wait
        at = 2 * self._key(key_id)
        values = self._values
        with self._locked():
            level, updated, wait = bucket_take(values[at], values[at + 1], limit, now)
            values[at], values[at + 1] = level, updated
        return wait

    def sockets(self) -> int:
        """Websockets open across every worker (for logs and tests)."""
        with self._locked():
            return int(sum(self._values[self._row(w)] for w in range(self._workers)))

    def reset_worker(self, slot: int) -> None:
        """Supervisor, after worker `slot` died: free the lock if it died holding it,
        and forget that worker's sockets."""
        if not self._lock.acquire(timeout=LOCK_TIMEOUT):
            log.warning("a dead worker held the shared limits lock: releasing it")
            self._lock.release()
            self._lock.acquire()
        try:
            row = self._row(slot)
            for i in range(row, row + self._keys + 1):
                self._values[i] = 0.0
        finally:
            self._lock.release()
