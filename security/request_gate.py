"""A websocket request's rate-limit token, taken across instances before admission.

Admission (`pipelines.common.Admission`) runs synchronously inside the socket's Rx
pipeline, so it cannot await Redis. With a shared limit store (`state.redis`) the
socket's reader awaits the token first, one round trip per new request:

    reader: await gate.before(msg, active)   new request id: take its token now
            inbound.on_next(msg)             admission calls gate.take(): that token
            gate.after()                     a token admission did not use goes back

`before` ignores messages of requests already in flight, `cancel` and `resume`. Admission
checks its other limits first, and a request they refuse never asks for the
token: `after` then refunds it, so a refused request spends none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from protocol.messages import ClientMessage, Inbound
from security.access import Client

_NOTHING = object()
_NOT_STARTS = frozenset({"cancel", "resume"})
"""Message types that never start a request on this socket."""


class SharedRateGate:
    """One socket's prefetched rate-limit token (see the module)."""

    def __init__(self, client: Client, clock: Callable[[], float]) -> None:
        self._client = client
        self._clock = clock
        self._pending: object = _NOTHING

    async def before(self, msg: Inbound, active: Mapping[str, ClientMessage]) -> None:
        """A message about to enter the pipeline: if it may start a request of a
        rate-limited key, take that request's token (awaited: Redis)."""
        self._pending = _NOTHING
        if not isinstance(msg, ClientMessage) or msg.type in _NOT_STARTS:
            return
        if msg.request_id in active:
            return
        client = self._client
        if client.limits.policy.of(client.key_id).rate_limit is None:
            return
        self._pending = await client.admit_request(self._clock())

    def take(self) -> float | None:
        """`Admission.rate_limit`: the prefetched answer (None: admitted, else seconds
        to wait), or a local one when nothing was prefetched."""
        pending, self._pending = self._pending, _NOTHING
        if pending is _NOTHING:
            return self._client.take_request(self._clock())
        return pending if isinstance(pending, float) else None

    def after(self) -> None:
        """The message went through the pipeline: give back a token it did not use."""
        pending, self._pending = self._pending, _NOTHING
        if pending is None:
            shared = self._client.shared
            if shared is not None:
                shared.refund_request(self._client.key_id)
