"""State shared by Sluice instances: the `state.redis` connection and what lives on it.

- `state.link.RedisLink`: one Redis client per worker process, its up/down state
  (logged once per change, a `/metrics` gauge, `/v1/ready`'s body) and the
  background reconnect.
- `state.limits.RedisLimits`: per-key socket caps and request rates counted
  across instances (one Lua script per admission), local counting while Redis is
  down.
- `state.health.SharedHealth`: provider health (429 cooldowns, open circuits,
  401/403 disables) published to every instance; reads stay local.

With no `state.redis` none of this is built and every process keeps its state to
itself, as before (docs/deploying.md, "Shared state on Redis").
"""
