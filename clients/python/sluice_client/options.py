"""Client settings (`ClientOptions`) and what one client has counted (`ClientStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sluice_client.backoff import Backoff


@dataclass(frozen=True)
class ClientOptions:
    """How a `SluiceClient` connects, reconnects and resends.

    - `backoff`: delays between connect attempts after consecutive failures.
    - `heartbeat`: seconds between client pings; a peer that misses the pong is
      treated as lost (None: no client pings; the client still answers the server's).
    - `connect_timeout`: seconds one websocket handshake may take.
    - `pending_timeout`: seconds a request may wait for a usable connection before
      it fails with `ConnectFailed`.
    - `max_sends`: how many times one request may be put on a socket (the first
      send plus transparent resends) before it fails.
    - `max_replay_bytes`: input (text and audio) kept per request for a transparent
      resend; a request that sent more is no longer resent, it fails with
      `ConnectionLost` when its socket is cut.
    - `send_high_water`: messages queued per request before an input pump waits.
    - `max_msg_size`: the largest frame accepted from the server, in bytes.
    - `resume`: a request that had started when its socket was lost is resumed on
      the next socket (`{"type": "resume", "request_id", "after_seq"}`, the last
      `seq` seen) instead of failing with `ConnectionLost` (docs/resume.md).
    """

    backoff: Backoff = field(default_factory=Backoff)
    heartbeat: float | None = 20.0
    connect_timeout: float = 10.0
    pending_timeout: float = 30.0
    max_sends: int = 10
    max_replay_bytes: int = 8 * 1024 * 1024
    send_high_water: int = 64
    max_msg_size: int = 4 * 1024 * 1024
    resume: bool = True


@dataclass
class ClientStats:
    """Counters of one client (all endpoints): they only grow.

    `connects` websockets opened, `connect_failures` handshakes that failed,
    `closes` websockets that ended (by either side), `resent` transparent resends
    of requests that had not received a frame, `resumed` started requests put on a
    new socket with `resume`, `lost` requests ended with
    `ConnectionLost`, `completed` requests ended by a non-error terminal frame,
    `failed` requests ended by a terminal error frame.
    """

    connects: int = 0
    connect_failures: int = 0
    closes: int = 0
    resent: int = 0
    resumed: int = 0
    lost: int = 0
    completed: int = 0
    failed: int = 0
