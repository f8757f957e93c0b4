"""The browser playground's static files (served by Sluice at /playground/)."""

from importlib.resources import files
from pathlib import Path


def static_dir() -> Path:
    """The folder holding index.html, playground.js and playground.css."""
    return Path(str(files(__name__)))
