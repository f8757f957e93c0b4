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
    """The JavaScript client's ES modules, or None where they are absent.

    An installed gateway carries them in playground/sluice-client (setup.py copies
    them at build time); a checkout (and an editable install) serves clients/js/src.
    """
    for folder in (
        static_dir() / "sluice-client",
        static_dir().parent / "clients" / "js" / "src",
    ):
        if (folder / "index.js").is_file():
            return folder
    return None
