"""DNS rebinding: which `Host` headers a Sluice without client keys answers.

A page on attacker.example can make its own name resolve to 127.0.0.1 after it
loaded; the browser then sends that page's requests to the developer's Sluice
with `Host: attacker.example:PORT` and the matching `Origin`, so the same-origin
check passes. The Host is the one thing the attacker cannot set to a loopback
name, so without keys (every caller is let in) a request flows into
`host_middleware` and either a 403 `host_not_allowed` flows out, before any
routing, on plain HTTP and websocket upgrades alike, or the next handler runs.

Served Hosts (the port is ignored): `localhost`, loopback addresses
(127.0.0.0/8, `[::1]`), the address the connection itself arrived on written as
an IP literal (what probes and `curl http://10.0.0.5:9099` send; a rebinding page
always sends a name), and `server.allowed_hosts` entries (a name or address,
`.example.com` for a domain and its subdomains, `"*"` for any). A request with
no Host header is not from a browser and passes, like one without an Origin.
With client keys configured the check applies only when `allowed_hosts` is set.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from config.models import SluiceConfig
from transport.http_json import json_response

log = logging.getLogger("sluice.access")

HOST_NOT_ALLOWED = "host_not_allowed"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Rejection = Callable[[str, str], None]
"""(endpoint, reason) of every refused request, for metrics."""


def host_name(header: str) -> str:
    """A Host header in, its lower-case name out: port, brackets and a final dot removed.

    `"LocalHost.:9099"` -> `"localhost"`, `"[::1]:80"` -> `"::1"`.
    """
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class HostPolicy:
    """The Hosts this server answers (see the module); `enforced` says whether it checks."""

    def __init__(
        self, allowed_hosts: list[str], *, enforced: bool, on_reject: Rejection | None = None
    ) -> None:
        self.enforced = enforced and "*" not in allowed_hosts
        self._on_reject = on_reject
        self._exact: set[str] = set()
        self._suffixes: list[str] = []
        for entry in allowed_hosts:
            name = entry.strip().lower().rstrip(".")
            if name.startswith(("*.", ".")):
                suffix = name.removeprefix("*").removeprefix(".")
                self._exact.add(suffix)
                self._suffixes.append("." + suffix)
            else:
                self._exact.add(name.strip("[]"))

    @classmethod
    def from_config(cls, config: SluiceConfig, on_reject: Rejection | None = None) -> HostPolicy:
        """The policy of a config: enforced without client keys, or with `allowed_hosts`.

        `on_reject(endpoint, reason)` hears every refusal (metrics).
        """
        allowed = config.server.allowed_hosts
        return cls(allowed, enforced=not config.auth.keys or bool(allowed), on_reject=on_reject)

    def allows(self, header: str | None, local_address: str | None = None) -> bool:
        """Whether a request with `Host: header` that arrived on `local_address` is served."""
        if not self.enforced or header is None:
            return True
        name = host_name(header)
        if name == "localhost" or name in self._exact:
            return True
        if any(name.endswith(suffix) for suffix in self._suffixes):
            return True
        address = _ip(name)
        if address is None:
            return False
        if address.is_loopback:
            return True
        local = _ip(local_address.split("%", 1)[0]) if local_address else None
        if isinstance(local, ipaddress.IPv6Address) and local.ipv4_mapped is not None:
            local = local.ipv4_mapped
        return local is not None and local == address

    def check(self, request: web.Request) -> web.Response | None:
        """None when `request` may go on, else its 403 `host_not_allowed` (logged, counted)."""
        header = request.headers.get(hdrs.HOST)
        if self.allows(header, _local_address(request)):
            return None
        if self._on_reject is not None:
            # a fixed label: the path of a refused request is the attacker's choice
            is_upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
            self._on_reject("websocket" if is_upgrade else "http", HOST_NOT_ALLOWED)
        shown = host_name(header or "")[:100]
        log.info(
            "request refused",
            extra={"reason": HOST_NOT_ALLOWED, "status": 403, "host": shown, "path": request.path},
        )
        return json_response(
            {
                "name": HOST_NOT_ALLOWED,
                "message": f"this server does not answer to the host {shown!r}: without "
                "client keys it serves only loopback names (add the name to "
                "server.allowed_hosts, or configure auth.keys)",
            },
            status=403,
        )


def _local_address(request: web.Request) -> str | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and sockname and isinstance(sockname[0], str):
        return sockname[0]
    return None


HOSTS = web.AppKey("sluice_hosts", HostPolicy)


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the app's `HostPolicy` (at `app[HOSTS]`) before any handler or routing error."""
    policy = request.app.get(HOSTS)
    refusal = policy.check(request) if policy is not None else None
    if refusal is not None:
        return refusal
    return await handler(request)
