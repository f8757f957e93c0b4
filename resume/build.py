"""Build the request log the configuration asks for."""

from __future__ import annotations

from config.models import ResumeConfig
from resume.log import MemoryRequestLog, RequestLog


def build_request_log(config: ResumeConfig) -> RequestLog | None:
    """`resume:` config in; the process's request log out (None when resume is off).

    Must be called with the event loop running (the store keeps timers on it).
    """
    if not config.enabled:
        return None
    return MemoryRequestLog(config.max_frames, config.retention, config.max_bytes)
