"""Newline-delimited JSON (JSON lines) over an aiohttp response body.

Ollama's `/api/chat` stream and Cohere v1's chat stream are JSON lines: one object
per line, no SSE framing. Lines are capped in size, not by aiohttp's readline limit
(Cohere's final line echoes the whole chat).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import aiohttp

from providers.http_errors import redact
from providers.types import ErrorCategory, ProviderError

MAX_LINE_BYTES = 16 * 1024 * 1024


class JSONLinesReader:
    """Newline-delimited JSON over an HTTP body, one object per line.

    In: the response's `StreamReader`. Out: from `next()`, each non-blank line
    parsed as a JSON object, then None at the end of the body (a last line without
    its newline still counts). Raises `ProviderError(PROTOCOL)` for a line that is
    not UTF-8, not JSON, not an object or longer than `max_line_bytes`. Lines may
    arrive split across TCP reads; the reader keeps the rest.
    """

    __slots__ = ("_buffer", "_content", "_label", "_max", "_scanned", "_secrets")

    def __init__(
        self,
        content: aiohttp.StreamReader,
        label: str,
        *,
        secrets: Iterable[str] = (),
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self._content = content
        self._label = label
        self._secrets = tuple(secrets)
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._scanned = 0

    async def next(self) -> dict[str, Any] | None:
        """The next JSON object of the body, or None once the body has ended."""
        while True:
            line = await self._next_line()
            if line is None:
                return None
            if line.strip():
                return self._parse(line)

    async def _next_line(self) -> bytes | None:
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if (end if end >= 0 else len(self._buffer)) > self._max:
                raise ProviderError(
                    ErrorCategory.PROTOCOL,
                    f"{self._label}: stream line longer than {self._max} bytes",
                )
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)  # no newline there: never search it again
            chunk = await self._content.readany()
            if not chunk:
                if not self._buffer:
                    return None
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            self._buffer += chunk

    def _parse(self, line: bytes) -> dict[str, Any]:
        try:
            text = line.decode("utf-8")
            obj = json.loads(text)
        except UnicodeDecodeError as exc:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream line is not UTF-8"
            ) from exc
        except ValueError as exc:
            snippet = redact(text[:200], self._secrets)
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream line is not JSON: {snippet!r}"
            ) from exc
        if not isinstance(obj, dict):
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream line is not a JSON object"
            )
        return obj
