"""Refuse to serve a non-loopback address to everyone.

Host and auth settings flow in; a refusal message (or None) flows out. With no
client keys configured Sluice serves loopback only, unless the operator says
`auth.allow_unauthenticated: true` (e.g. behind an authenticating proxy).
"""

from __future__ import annotations

import ipaddress

from config.models import AuthConfig


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_problem(host: str, auth: AuthConfig) -> str | None:
    """Why Sluice must not listen on `host` with these auth settings, or None."""
    if auth.keys or auth.allow_unauthenticated or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host!r} without client API keys: anyone who can reach "
        "it could spend your provider credits. Add auth.keys (see `sluice hash-key`), "
        "listen on 127.0.0.1, or set auth.allow_unauthenticated: true if a proxy in "
        "front of Sluice authenticates clients"
    )
