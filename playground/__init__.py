"""The browser playground's static files (served by Sluice at /playground/).

The page uses the JavaScript client (clients/js, npm `sluice-client`), served from
its own source folder at /playground/sluice-client/.
"""

from importlib.resources import files
from pathlib import Path


def static_dir() -> Path:
    """The folder holding index.html, playground.js and playground.css."""
    return Path(str(files(__name__)))


def client_dir() -> Path | None:
    """The JavaScript client's ES modules (clients/js/src), or None where they are absent.

    A checkout (and an editable install) has them beside the gateway's packages; an
    installed gateway wheel does not carry them, and its playground then has no client.
    """
    source = static_dir().parent / "clients" / "js" / "src"
    return source if (source / "index.js").is_file() else None
