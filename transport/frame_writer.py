"""Websocket frames written straight to the transport, and the counts they add up to.

`ws_frame(payload, is_text)`: one unmasked server-to-client frame (RFC 6455 5.2):
FIN + opcode, the payload length (7 bits, or 126 + 16 bits, or 127 + 64 bits),
the payload. A server never masks.

`SentCounts`: frames and bytes written by a socket, added to the Prometheus
counters in batches (every `FLUSH_EVERY` frames and when the socket ends) rather
than three metric updates per chunk.
"""

from __future__ import annotations

import struct
from typing import Any

FIN_TEXT = 0x81
FIN_BINARY = 0x82
FLUSH_EVERY = 64

_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def ws_frame(payload: bytes, is_text: bool) -> bytes:
    """A whole payload in, the bytes of one final, unmasked text or binary frame out."""
    first = FIN_TEXT if is_text else FIN_BINARY
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 65536:
        header = _LEN16.pack(first, 126, size)
    else:
        header = _LEN64.pack(first, 127, size)
    return header + payload


class SentCounts:
    """Frames and bytes one socket wrote, flushed to its labelled counters in batches.

    In: `add(size, is_text)` per frame. Out: `frames_sent{kind}` and `bytes_sent`
    increments, at most one of each per `FLUSH_EVERY` frames (and at `flush()`).
    With no counters (no metrics) it only counts.
    """

    __slots__ = ("_binaries", "_bytes", "_pending", "_texts", "binary", "bytes", "text")

    def __init__(self, texts: Any = None, binaries: Any = None, sent_bytes: Any = None) -> None:
        self._texts = texts
        self._binaries = binaries
        self._bytes = sent_bytes
        self.text = self.binary = self.bytes = 0
        self._pending = 0

    def add(self, size: int, is_text: bool) -> None:
        """One frame of `size` bytes was written."""
        if is_text:
            self.text += 1
        else:
            self.binary += 1
        self.bytes += size
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Add what was counted since the last flush to the counters."""
        self._pending = 0
        if self._texts is None:
            self.text = self.binary = self.bytes = 0
            return
        if self.text:
            self._texts.inc(self.text)
        if self.binary:
            self._binaries.inc(self.binary)
        if self.bytes:
            self._bytes.inc(self.bytes)
        self.text = self.binary = self.bytes = 0
