"""`SharedHealth`: one instance's provider verdicts reach every instance within a second.

    local ModelHealth event ──► publish: HSET verdicts + PUBLISH health (one round trip,
                                          never awaited by a request)
    PUBLISH health ──► every other instance's listener ──► ModelHealth.apply_shared

Verdicts shared: a model cooling down after a 429 (until its `Retry-After`), after
an open circuit (error budget spent, until `health.cooldown`), and a model
disabled by a 401/403. Reading health stays local: routing never calls Redis, it
reads the same `ModelHealth` it always did, which the listener updates.

Chat, speak and listen routers all share (`routing.router.HealthShare`; a speech
router's sections are keyed `speak:<id>` and `listen:<id>`). A verdict applies to
the same model (router key and model id) whose provider block
is identical, API key included (`fingerprint`): a 429 on one account says nothing
about another, and a pod started with a fixed key ignores the old key's 401.

Verdicts also sit in a hash (`health:verdicts`), read when Redis comes (back) up,
so an instance that starts, reconnects or rebuilds routers on a config reload
(`adopt`) does not try a model another instance just saw answer 429. A reload is
how an operator says the credentials are fixed: it re-enables this instance's
disabled models and forgets their stored disables (`forget_disabled`); the other
instances keep theirs until they reload too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.models import ModelBase
from routing.health import DISABLED, UNHEALTHY, EventSink
from routing.router import ModelRouter
from state.link import RedisLink, StateUnavailable

log = logging.getLogger("sluice.health")

KEEP_SECONDS = 86_400
"""How long the verdict hash lives after its last write (disables outlive cooldowns)."""


def fingerprint(model: ModelBase) -> str:
    """A model's config in; a digest of it, secrets included, out (never the secret)."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, BaseModel):
            return plain(value.model_dump())
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value if isinstance(value, str | int | float | bool | None) else str(value)

    text = json.dumps(plain(model.model_dump()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One instance's word on one model: `disabled`, or `unhealthy` until `until`."""

    router: str
    model: str
    state: str
    until: float | None
    fingerprint: str
    reason: str
    instance: str

    def to_json(self) -> str:
        """The verdict as the JSON kept in Redis and published."""
        return json.dumps(
            {
                "r": self.router,
                "m": self.model,
                "s": self.state,
                "u": self.until,
                "f": self.fingerprint,
                "why": self.reason,
                "i": self.instance,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Verdict | None:
        """JSON from Redis in; the verdict, or None for anything malformed."""
        try:
            d = json.loads(text)
            until = d["u"]
            return cls(
                str(d["r"]),
                str(d["m"]),
                str(d["s"]),
                None if until is None else float(until),
                str(d["f"]),
                str(d.get("why", "")),
                str(d["i"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


class SharedHealth:
    """Publishes this instance's health verdicts and applies the others' (see module).

    `routers()` gives the chat routers now serving (they change on reload);
    `clock()` is the app scheduler's Unix seconds, the clock verdicts are in.
    """

    def __init__(self, link: RedisLink, clock: Callable[[], float]) -> None:
        self._link = link
        self._clock = clock
        self._channel = link.key("health")
        self._table = link.key("health", "verdicts")
        self._trackers: dict[str, ModelRouter] = {}
        self._fingerprints: dict[tuple[str, str], str] = {}
        self._mirror: dict[tuple[str, str], Verdict] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self.applied = 0
        """Verdicts of other instances applied here (tests, logs)."""
        link.on_up(self._load)

    async def load_now(self) -> None:
        """Read the stored verdicts now, if Redis is up (before routers are built)."""
        if self._link.up:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self._link.config.command_timeout * 4):
                    await self._load()

    def serve(self) -> None:
        """Start listening to the other instances' verdicts."""
        self._listener = asyncio.create_task(self._listen(), name="sluice-health-listen")

    # ---- this instance's verdicts out ----------------------------------------------

    def sink(self, router_id: str, downstream: EventSink) -> EventSink:
        """A router's health event sink in; the same sink that also publishes the
        verdicts other instances should share."""

        def on_event(event: str, fields: dict[str, Any]) -> None:
            downstream(event, fields)
            model_id = str(fields.get("model_id", ""))
            if event == "model_unhealthy":
                until = fields.get("until")
                state = UNHEALTHY
            elif event == "model_disabled":
                until, state = None, DISABLED
            else:
                return
            fp = self._fingerprints.get((router_id, model_id))
            if fp is None:
                return
            reason = str(fields.get("reason", ""))
            until_f = float(until) if isinstance(until, int | float) else None
            verdict = Verdict(router_id, model_id, state, until_f, fp, reason, self._link.instance)
            self.publish(verdict)

        return on_event

    def publish(self, verdict: Verdict) -> None:
        """Store and publish `verdict` (one pipelined round trip, not awaited)."""
        self._mirror[(verdict.router, verdict.model)] = verdict
        if not self._link.up:
            return
        text = verdict.to_json()
        field = f"{verdict.router}/{verdict.model}"

        async def send(redis: Redis) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hset(self._table, field, text)
                pipe.expire(self._table, KEEP_SECONDS)
                pipe.publish(self._channel, text)
                await pipe.execute()

        self._spawn(self._link.run(send))

    # ---- other instances' verdicts in ----------------------------------------------

    def adopt(self, router_id: str, tracker: ModelRouter, models: Sequence[ModelBase]) -> None:
        """A router just built (start-up or reload) in, by its key (`HealthShare`):
        remember it and its models' fingerprints, and apply the verdicts known for
        them (no Redis call). The router a reload builds replaces the old one here."""
        now = self._clock()
        self._trackers[router_id] = tracker
        for model in models:
            self._fingerprints[(router_id, model.id)] = fingerprint(model)
            verdict = self._mirror.get((router_id, model.id))
            if verdict is not None:
                self._apply_to(tracker, verdict, now)

    def forget_disabled(self) -> None:
        """A config reload re-enabled this instance's disabled models: drop the stored
        disables of its models (instances started later must not inherit them)."""
        fields = [
            f"{router}/{model}"
            for (router, model), verdict in list(self._mirror.items())
            if verdict.state == DISABLED
            and self._fingerprints.get((router, model)) == verdict.fingerprint
        ]
        for field in fields:
            router, _, model = field.partition("/")
            self._mirror.pop((router, model), None)
        if fields and self._link.up:
            self._spawn(self._link.run(lambda r: r.hdel(self._table, *fields)))

    def _apply(self, verdict: Verdict) -> None:
        if verdict.instance == self._link.instance:
            return
        key = (verdict.router, verdict.model)
        now = self._clock()
        if verdict.state == UNHEALTHY and (verdict.until is None or verdict.until <= now):
            return
        self._mirror[key] = verdict
        tracker = self._trackers.get(verdict.router)
        if tracker is not None:
            self._apply_to(tracker, verdict, now)

    def _apply_to(self, tracker: ModelRouter, verdict: Verdict, now: float) -> None:
        if self._fingerprints.get((verdict.router, verdict.model)) != verdict.fingerprint:
            return
        if verdict.model not in tracker.model_ids:
            return
        if tracker.health(verdict.model).apply_shared(verdict.state, verdict.until, now):
            self.applied += 1
            log.warning(
                "model health shared by another instance",
                extra={
                    "router": verdict.router,
                    "model": verdict.model,
                    "state": verdict.state,
                    "until": verdict.until,
                    "reason": verdict.reason,
                    "from_instance": verdict.instance,
                },
            )

    async def _load(self) -> None:
        """Redis (back) up: read every stored verdict, apply the live ones, drop the
        expired cooldowns."""
        stored: dict[bytes | str, bytes | str] = await self._link.redis.hgetall(self._table)
        now = self._clock()
        expired: list[bytes | str] = []
        for field, text in stored.items():
            verdict = Verdict.from_json(text)
            if verdict is None or (
                verdict.state == UNHEALTHY and (verdict.until is None or verdict.until <= now)
            ):
                expired.append(field)
                continue
            self._apply(verdict)
        if expired:
            await self._link.redis.hdel(self._table, *expired)

    async def _listen(self) -> None:
        """Subscribe while Redis is up; after a lost connection subscribe again and
        catch up from the stored verdicts."""
        interval = self._link.config.reconnect_interval
        while True:
            if not self._link.up:
                await asyncio.sleep(interval)
                continue
            pubsub = self._link.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                with contextlib.suppress(RedisError, OSError):
                    await self._load()
                while True:
                    message = await pubsub.get_message(timeout=interval)
                    if message is None or message.get("type") != "message":
                        continue
                    verdict = Verdict.from_json(message["data"])
                    if verdict is not None:
                        self._apply(verdict)
            except (RedisError, OSError) as error:
                log.debug("health listener lost Redis", extra={"error": str(error)})
                await asyncio.sleep(interval)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _spawn(self, call: Any) -> None:
        async def quiet() -> None:
            with contextlib.suppress(StateUnavailable):
                await call

        task = asyncio.ensure_future(quiet())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop listening; let pending publishes finish."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await asyncio.gather(*self._tasks, return_exceptions=True)


SHARED_HEALTH = web.AppKey("shared_health", SharedHealth)
"""The process's `SharedHealth` (with `state.redis`): routers built outside the
gateway (the embedding routers) adopt their trackers through it."""
