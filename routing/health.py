"""Per-model health: an error budget (token bucket), cooldowns and half-open probing.

Everything here is synchronous and deterministic. Time flows in as `now` (seconds on
the caller's Rx scheduler clock); nothing reads a wall clock.

State machine of one model (`ModelHealth`)::

    healthy --budget empty / 429--> unhealthy --until elapses--> half_open
    half_open --probe succeeds--> healthy
    half_open --probe fails------> unhealthy (another cooldown)
    any --401/403--> disabled (until reset(), i.e. config reload or restart)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

from config.models import ErrorBudget, HealthConfig
from providers.types import ErrorCategory, ProviderError

EventSink = Callable[[str, dict[str, Any]], None]
"""Receives `(event_name, fields)` for health transitions (logging, metrics)."""

HEALTHY: Final = "healthy"
UNHEALTHY: Final = "unhealthy"
HALF_OPEN: Final = "half_open"
DISABLED: Final = "disabled"

# Guards the "is there a whole token" test against float noise in refill math
# (e.g. 20 s * 0.05 tokens/s = 1.0000000000000002).
_EPSILON: Final = 1e-9


class TokenBucket:
    """A bucket of `capacity` tokens refilled continuously at `capacity / refill_seconds`.

    In: `now` on every call (seconds, non-decreasing; a step back counts as no time).
    Out: `take(now)` says whether a whole token was available (and removes it);
    `tokens(now)` is the current, possibly fractional, level in `[0, capacity]`.
    The bucket starts full at the construction time `now`.
    """

    def __init__(self, capacity: int, refill_seconds: float, now: float) -> None:
        if capacity < 1:
            raise ValueError("a token bucket needs a capacity of at least 1")
        if not refill_seconds > 0:
            raise ValueError("a token bucket needs a positive refill period")
        self.capacity = capacity
        self.refill_seconds = float(refill_seconds)
        self._rate = capacity / self.refill_seconds
        self._level = float(capacity)
        self._updated = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:
            self._level = min(float(self.capacity), self._level + elapsed * self._rate)
            self._updated = now

    def tokens(self, now: float) -> float:
        """The token level at `now` (refill applied), between 0 and `capacity`."""
        self._refill(now)
        return self._level

    def take(self, now: float) -> bool:
        """Remove one token if a whole one is there at `now`; True when it was."""
        self._refill(now)
        if self._level < 1.0 - _EPSILON:
            return False
        self._level = max(0.0, self._level - 1.0)
        return True

    def fill(self) -> None:
        """Top the bucket up to `capacity` (config reload)."""
        self._level = float(self.capacity)


class ModelHealth:
    """Health of one model: decides whether a request may try it at `now`.

    In: attempt outcomes (`begin_attempt`, `record_success`, `record_failure`) with
    the scheduler time `now`. Out: `available(now)`, `state(now)` (one of
    `healthy`, `unhealthy`, `half_open`, `disabled`) and `unavailable_until(now)`.

    Failures are charged by category (`ProviderError.category`; any other exception
    counts as transient):

    - BAD_REQUEST: the client's own bad input, not charged (a probe slot is freed).
    - RATE_LIMITED: unhealthy until `now + retry_after`, or `now +
      health.rate_limit_cooldown` when the 429 named no Retry-After.
    - AUTH: disabled until `reset()`; `on_event("model_disabled", ...)` fires once.
    - anything else: takes a token from the error budget; when the bucket is empty
      (so the budget-th failure within the refill window trips it) the model is
      unhealthy until `now + health.cooldown`.

    When an unhealthy period ends the model is `half_open`: it is available to
    exactly one attempt (the one that calls `begin_attempt`); the others see it
    unavailable until that probe ends. A successful probe restores `healthy`; a
    failed one starts another cooldown. The error budget is not refilled by a
    recovery; it keeps refilling at its own rate.

    A success reported while the model is still cooling down (an attempt that
    started before the model turned unhealthy) does not cut the cooldown short.

    `on_event(name, fields)` receives `model_unhealthy` (fields: model_id, reason,
    until), `model_recovered` (model_id) and, once per disabling, `model_disabled`
    (model_id, reason, status, message) which callers should log loudly.
    """

    def __init__(
        self,
        model_id: str,
        budget: ErrorBudget,
        health: HealthConfig,
        now: float = 0.0,
        on_event: EventSink | None = None,
    ) -> None:
        self.model_id = model_id
        self.budget = budget
        self.health = health
        self._on_event = on_event
        self._bucket = TokenBucket(budget.budget, budget.unit_seconds, now)
        self._disabled = False
        # Set while the model is cooling down or half-open: the end of the cooldown.
        # None means healthy (or disabled).
        self._until: float | None = None
        self._probing = False

    def state(self, now: float) -> str:
        """`healthy`, `unhealthy`, `half_open` or `disabled` at `now`."""
        if self._disabled:
            return DISABLED
        if self._until is None:
            return HEALTHY
        if now < self._until:
            return UNHEALTHY
        return HALF_OPEN

    def available(self, now: float) -> bool:
        """True when a request may try this model at `now`.

        Healthy models are available; a half-open model only while nobody holds
        its probe slot; unhealthy and disabled models are not.
        """
        state = self.state(now)
        return state == HEALTHY or (state == HALF_OPEN and not self._probing)

    def probing(self, now: float) -> bool:
        """True while a half-open probe is in flight at `now`."""
        return self._probing and self.state(now) == HALF_OPEN

    def unavailable_until(self, now: float) -> float | None:
        """When a currently cooling-down model becomes (half-open) available.

        The end of the cooldown while `unhealthy`; `math.inf` while `disabled`;
        None when the model is healthy or half-open (a running probe has no known
        end time).
        """
        state = self.state(now)
        if state == DISABLED:
            return math.inf
        if state == UNHEALTHY:
            return self._until
        return None

    def begin_attempt(self, now: float) -> None:
        """An attempt on this model starts at `now`.

        In `half_open` with a free slot, this attempt becomes the probe and the
        model turns unavailable to others until it ends (`record_success`,
        `record_failure` or `cancel_attempt`). Otherwise nothing changes; callers
        check `available(now)` first.
        """
        if self.state(now) == HALF_OPEN and not self._probing:
            self._probing = True

    def cancel_attempt(self, now: float) -> None:
        """An attempt ended with no verdict (cancelled, disposed): free the probe slot."""
        del now
        self._probing = False

    def record_success(self, now: float) -> None:
        """An attempt succeeded at `now`: a half-open model becomes healthy again."""
        self._probing = False
        if self.state(now) == HALF_OPEN:
            self._until = None
            self._emit("model_recovered", {"model_id": self.model_id})

    def record_failure(self, error: BaseException, now: float) -> None:
        """An attempt failed with `error` at `now`: charge it by category (see class)."""
        self._probing = False
        if self._disabled:
            return
        category = error.category if isinstance(error, ProviderError) else ErrorCategory.TRANSIENT
        if category == ErrorCategory.BAD_REQUEST:
            return
        if category == ErrorCategory.AUTH:
            self._disabled = True
            self._until = None
            status = error.status if isinstance(error, ProviderError) else None
            self._emit(
                "model_disabled",
                {
                    "model_id": self.model_id,
                    "reason": category.value,
                    "status": status,
                    "message": f"model {self.model_id!r} is disabled until config reload "
                    f"or restart: {error}",
                },
            )
            return
        if category == ErrorCategory.RATE_LIMITED:
            retry_after = error.retry_after if isinstance(error, ProviderError) else None
            delay = self.health.rate_limit_cooldown if retry_after is None else retry_after
            self._cool_down(now, max(0.0, delay), category)
            return
        was_half_open = self.state(now) == HALF_OPEN
        self._bucket.take(now)
        empty = self._bucket.tokens(now) < 1.0 - _EPSILON
        if was_half_open or empty:
            self._cool_down(now, self.health.cooldown, category)

    def apply_shared(self, state: str, until: float | None, now: float) -> bool:
        """Another instance's verdict in (`state.health.SharedHealth`): `disabled`, or
        `unhealthy` until `until`. True when it changed this model; no event fires
        (the instance that saw the failure logged it). A later cooldown end wins; a
        verdict already over at `now` changes nothing."""
        if self._disabled:
            return False
        if state == DISABLED:
            self._disabled = True
            self._until = None
            self._probing = False
            return True
        if state != UNHEALTHY or until is None or until <= now:
            return False
        if self._until is not None and self._until >= until:
            return False
        self._until = until
        return True

    def reset(self) -> None:
        """Forget everything (config reload): healthy, full error budget, no probe."""
        self._disabled = False
        self._until = None
        self._probing = False
        self._bucket.fill()

    def _cool_down(self, now: float, delay: float, reason: ErrorCategory) -> None:
        entering = self.state(now) != UNHEALTHY
        until = now + delay
        if self._until is not None and not entering:
            until = max(until, self._until)
        self._until = until
        if entering:
            self._emit(
                "model_unhealthy",
                {"model_id": self.model_id, "reason": reason.value, "until": until},
            )

    def _emit(self, name: str, fields: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(name, fields)
