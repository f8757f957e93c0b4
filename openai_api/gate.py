"""What every OpenAI-compatible request passes before its work starts.

`authenticated(request)` (the access layer's caller, refusing when keys are
required and the caller was not authenticated), `accepting(gateway)` (503 while
draining), `allowed(client, router_id)` (403 for a key limited to other
routers), `take_request(client, gateway)` (429 with Retry-After at the key's
rate), and `in_flight(gateway)` (counts the request for the drain).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from openai_api.errors import AUTHENTICATION, PERMISSION, RATE_LIMIT, ApiError
from openai_api.types import GatewayView
from protocol.frames import ErrorName
from security.access import ACCESS, CLIENT, Client


def authenticated(request: web.Request) -> Client:
    """The caller the access middleware admitted.

    Fails closed: with client keys configured, an anonymous caller here means
    the access layer did not check this path, and the request is refused (401).
    """
    client = request[CLIENT]
    access = request.app[ACCESS]
    if access.keys_required and client is access.anonymous:
        raise ApiError(
            401,
            "an API key is required: send 'Authorization: Bearer <key>'",
            code=ErrorName.UNAUTHORIZED,
            error_type=AUTHENTICATION,
            headers={"WWW-Authenticate": 'Bearer realm="sluice"'},
        )
    return client


def accepting(gateway: GatewayView) -> None:
    """Refuse (503 `shutting_down`) while the instance drains."""
    if gateway.draining:
        raise ApiError(503, "this instance is shutting down", code=ErrorName.SHUTTING_DOWN)


def allowed(client: Client, router_id: str) -> None:
    """Refuse (403 `forbidden`) a key that may not use `router_id`."""
    if not client.may_use(router_id):
        raise ApiError(
            403,
            f"this API key may not use router {router_id!r}",
            code=ErrorName.FORBIDDEN,
            error_type=PERMISSION,
        )


async def take_request(client: Client, gateway: GatewayView) -> None:
    """Spend one request of the key's rate (across instances with `state.redis`), or
    refuse (429 with Retry-After)."""
    wait = await client.admit_request(gateway.clock())
    if wait is not None:
        raise ApiError(
            429,
            f"this API key's request rate is used up; retry in {wait:.3f} s",
            code=ErrorName.RATE_LIMITED,
            error_type=RATE_LIMIT,
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )


@contextmanager
def in_flight(gateway: GatewayView) -> Iterator[None]:
    """Count the request as in flight (the drain waits for it) for the block's duration."""
    gateway.http_in_flight += 1
    try:
        yield
    finally:
        gateway.http_in_flight -= 1
        gateway.work_ended.set()
