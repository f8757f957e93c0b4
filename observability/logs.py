"""Structured JSON logs: one line per event, with the request's context fields.

Log calls pass context as `extra={"request_id": ..., "router": ..., "model": ...,
"provider": ..., "endpoint": ...}`; the formatter writes them beside the message.
Given a `redact` function (built from the config's secrets), the formatter masks
every secret in the message, the extra fields and tracebacks, so a provider key
that slipped into an exception text never reaches the log; client keys quoted as
`Bearer <key>` or `sluice.auth.<key>` are masked too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

Redact = Callable[[str], str]

_CLIENT_KEY = re.compile(r"(sluice\.auth\.|Bearer\s+)[^\s,'\"\]]+")


def safe_extra(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` made safe to pass as `extra=`: names the logging module reserves
    (`message`, `args`, `module`, ...) would raise KeyError and are renamed
    (`message` -> `detail`, others get a trailing underscore)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in _STANDARD:
            key = "detail" if key == "message" else f"{key}_"
        out[key] = value
    return out


def _keep(text: str) -> str:
    return text


class JsonFormatter(logging.Formatter):
    """LogRecord in, one JSON object per line out (secrets masked by `redact`)."""

    def __init__(self, redact: Redact | None = None) -> None:
        super().__init__()
        self._redact = redact or _keep

    def also_mask(self, redact: Redact) -> None:
        """Mask what `redact` masks as well, from the next line on."""
        first = self._redact

        def both(text: str) -> str:
            return redact(first(text))

        self._redact = both

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` with its extra fields and, if any, its exception."""
        redact = self._redact
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        line = redact(json.dumps(out, default=str, ensure_ascii=False))
        if "sluice.auth." in line or "Bearer" in line:
            line = _CLIENT_KEY.sub(r"\1***", line)  # a client key quoted by a library
        return line


def mask_in_logs(redact: Redact) -> None:
    """Secrets a config reload brought in: every JSON log handler masks them too."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, JsonFormatter):
            formatter.also_mask(redact)


def configure_logging(level: str, *, redact: Redact | None = None) -> None:
    """Send every log line to stderr as JSON at `level`, secrets masked by `redact`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
