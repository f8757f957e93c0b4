"""Build the request log the configuration asks for."""

from __future__ import annotations

from config.models import RedisStateConfig, ResumeConfig
from resume.log import MemoryRequestLog, RequestLog


def build_request_log(
    config: ResumeConfig, state: RedisStateConfig | None = None
) -> RequestLog | None:
    """`resume:` (and `state.redis`) config in; the process's request log out (None
    when resume is off): on Redis Streams when `resume.redis` or else `state.redis`
    names a server, else in memory.

    The log has a connection of its own: its readers block in `XREAD` for up to a
    second, longer than `state.redis.command_timeout` lets a shared-state command
    take, and its writes must never queue behind an admission's. Keys start with
    `state.redis.key_prefix` + `req:`. Must be called with the event loop running.
    """
    if not config.enabled:
        return None
    url = config.redis or (state.url if state is not None else None)
    if url is not None:
        from redis.asyncio import Redis

        from resume.redis_log import RedisRequestLog

        prefix = (state.key_prefix if state is not None else "sluice:") + "req:"
        return RedisRequestLog(
            Redis.from_url(url),
            max_frames=config.max_frames,
            retention=config.retention,
            running_ttl=config.detached_timeout + config.retention,
            flush_interval=config.flush_interval,
            lease=config.lease,
            prefix=prefix,
        )
    return MemoryRequestLog(config.max_frames, config.retention, config.max_bytes)
