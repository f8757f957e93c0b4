"""Shutting down: the GEP 8 rollout drain and the final socket close.

A running app in; `drain(app, grace)` stops taking work, lets in-flight work end
within `grace` seconds and ends the rest; `close_sockets(app)` (on shutdown) ends
every open socket's requests with `shutting_down` and closes it with 1001.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.core import GATEWAY

log = logging.getLogger("sluice.server")


async def close_sockets(app: web.Application) -> None:
    """On shutdown: requests still in flight end with `shutting_down`; sockets get 1001."""
    gateway = app[GATEWAY]
    gateway.draining = True
    sessions = list(gateway.sessions)
    for session in sessions:
        session.end_now(gateway.clock)
    if sessions:
        await asyncio.wait([asyncio.ensure_future(s.closed.wait()) for s in sessions], timeout=5)


async def drain(app: web.Application, grace: float) -> None:
    """GEP 8 rollout drain: stop taking work, let in-flight work finish, then end the rest.

    Readiness turns 503 and new upgrades are refused at once; idle sockets get
    1001 now, busy ones when their last request ends; at `grace` seconds every
    request still running ends with `shutting_down` and its socket gets 1001.
    A busy socket whose client resumes is closed with 1012 at once instead, its
    requests running on detached: under `resume.on_drain: auto` when the client
    said so (`?resume=1`) and the request log is on Redis (a reconnect may land on
    any instance); under `restart` always. Every open socket is told, Glide's and
    the OpenAI Realtime sessions alike (`transport.open_socket.OpenSocket`).
    """
    gateway = app[GATEWAY]
    loop = asyncio.get_running_loop()
    gateway.draining = True
    started = loop.time()
    log.info(
        "draining",
        extra={"sockets": len(gateway.sessions), "http_in_flight": gateway.http_in_flight},
    )
    on_drain = gateway.config.resume.on_drain
    # auto: only where a resume can land on any instance (the log on Redis)
    elsewhere = gateway.request_log is not None and gateway.request_log.takes_over
    for session in list(gateway.sessions):
        session.drain(
            restart=on_drain == "restart"
            or (on_drain == "auto" and elsewhere and session.client_resumes)
        )
    deadline = started + grace
    while gateway.busy and (remaining := deadline - loop.time()) > 0:
        gateway.work_ended.clear()
        try:
            await asyncio.wait_for(gateway.work_ended.wait(), remaining)
        except TimeoutError:
            break
    left = len(gateway.sessions)
    await close_sockets(app)
    log.info(
        "drained",
        extra={"seconds": round(loop.time() - started, 3), "sockets_cut_at_deadline": left},
    )
