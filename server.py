"""Sluice's entry point: `python server.py serve ...` and the `sluice` console script.

argv in; an exit status out, through `serving.cli.main`. The pieces live in small
modules: `gateway.app.build_app` (the aiohttp app), `glide_api` (the Glide
handlers), `serving.serve` (a serving process), `serving.drain`, `serving.cli`.
The names below are re-exported for the callers (tests, tools) that import them
from here.
"""

from __future__ import annotations

import sys

from gateway.app import build_app
from gateway.core import GATEWAY, SHARED_LIMITS, Gateway
from serving.cli import main
from serving.drain import close_sockets, drain
from serving.serve import serve

__all__ = [
    "GATEWAY",
    "SHARED_LIMITS",
    "Gateway",
    "build_app",
    "close_sockets",
    "drain",
    "main",
    "serve",
]

if __name__ == "__main__":
    sys.exit(main())
