"""Build the request log the configuration asks for."""

from __future__ import annotations

from config.models import ResumeConfig
from resume.log import MemoryRequestLog, RequestLog


def build_request_log(config: ResumeConfig) -> RequestLog | None:
    """`resume:` config in; the process's request log out (None when resume is off):
    on Redis Streams when `redis` names a server, else in memory.

    Must be called with the event loop running (the logs keep timers on it).
    """
    if not config.enabled:
        return None
    if config.redis is not None:
        from redis.asyncio import Redis

        from resume.redis_log import RedisRequestLog

        return RedisRequestLog(
            Redis.from_url(config.redis),
            max_frames=config.max_frames,
            retention=config.retention,
            running_ttl=config.detached_timeout + config.retention,
            flush_interval=config.flush_interval,
            lease=config.lease,
        )
    return MemoryRequestLog(config.max_frames, config.retention, config.max_bytes)
