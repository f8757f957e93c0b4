"""Failover across a router's models, and retry of whole passes with backoff.

`failover(...)` is a source: one request's answer, produced by trying the
router's models in the order its strategy gives (the next model is subscribed
the moment the previous one errors, the way `catch_with_iterable` would, but in
one subscription with no operator chain per attempt: this runs once per request
and is on every chunk's path). It is generic over the item type, so chat, speak
and listen share it.

Items flow through unchanged. When an attempt fails after it already emitted
items, a `Reset` is emitted before moving on, so the consumer can drop that
partial output (Glide's `model_unavailable`) — unless a `Handoff` is given: then
the request itself decides, per next model, whether that model carries the
partial output on (no Reset) or restarts (the Reset comes right before it).
Failover sits above retry: each pass tries every available model once; a whole
failed pass is retried after an exponential backoff (`retry_passes`), and an
attempt is never retried in place. A `Budget` bounds one request across all its
attempts and passes.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from reactivex import Observable, abc

from config.models import RetryConfig
from operators.scheduling import Once, require_scheduler, seconds
from providers.types import ProviderError
from routing.backoff import backoff_delay

T = TypeVar("T")

log = logging.getLogger("sluice.failover")


class RouterHealth(Protocol):
    """What failover needs from a router's health and strategy (`routing.ModelRouter`)."""

    def plan(self, now: float) -> list[str]: ...
    def available(self, model_id: str, now: float) -> bool: ...
    def begin_attempt(self, model_id: str, now: float) -> None: ...
    def record_success(self, model_id: str, now: float, latency: float | None) -> None: ...
    def record_failure(self, model_id: str, error: BaseException, now: float) -> None: ...
    def cancel_attempt(self, model_id: str, now: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Reset:
    """The attempt on `model_id` failed after emitting items: drop its partial output."""

    model_id: str
    error: BaseException


class AllModelsUnavailable(Exception):
    """Every model of the router failed or was unavailable for this request.

    `reason` says why no further attempt was made, when that was not simply the
    end of the retries (the request's deadline, every model out past it).
    """

    def __init__(
        self,
        router_id: str,
        failures: Sequence[tuple[str, BaseException]],
        reason: str | None = None,
    ) -> None:
        self.router_id = router_id
        self.failures = list(failures)
        self.reason = reason
        if failures:
            causes = "; ".join(f"{model}: {error}" for model, error in failures)
            text = f"all models of router {router_id!r} failed: {causes}"
        else:
            text = f"no model of router {router_id!r} is available right now (all unhealthy)"
        if reason:
            text = f"{text}; {reason}"
        super().__init__(text)


class Handoff(Protocol):
    """How one request carries a broken answer over to the next model.

    `broke(model_id, error)`: the attempt on `model_id` failed after it emitted
    items. `before(model_id)`: the next attempt is about to start on `model_id`;
    a `Reset` returned is emitted first (that model restarts the answer), None
    means it goes on from what was emitted (or there is nothing to carry).
    """

    def broke(self, model_id: str, error: BaseException) -> None: ...
    def before(self, model_id: str) -> Reset | None: ...


Recovery = Callable[[str, float], float | None]
"""(model_id, now) -> when a cooling-down model is available again (`math.inf`
while disabled), None when it is available or its return is unknown."""


class Budget:
    """One request's time budget across all its attempts and retry passes.

    `seconds` from the moment the first pass starts (`start(now)`); `end` is then
    that moment plus `seconds` on the scheduler's clock. `models` and `recovery`
    let `retry_passes` see that no model can be back before `end`.
    """

    __slots__ = ("end", "models", "recovery", "seconds")

    def __init__(
        self,
        seconds: float,
        models: Sequence[str] = (),
        recovery: Recovery | None = None,
    ) -> None:
        self.seconds = seconds
        self.models = tuple(models)
        self.recovery = recovery
        self.end: float | None = None

    def start(self, now: float) -> None:
        """The request starts at `now` (later calls change nothing)."""
        if self.end is None:
            self.end = now + self.seconds

    def left(self, now: float) -> float:
        """Seconds left at `now` (infinite before `start`)."""
        return math.inf if self.end is None else self.end - now

    def exhausted(self) -> str:
        """The reason given when the budget ran out."""
        return f"the request's {self.seconds:g}s deadline ran out"

    def futile(self, start_at: float, now: float) -> str | None:
        """Why a pass starting at `start_at` cannot help (None when it may)."""
        if self.end is None:
            return None
        if start_at >= self.end:
            return f"no time for another pass within the request's {self.seconds:g}s deadline"
        if self.recovery is None or not self.models:
            return None
        outs: list[str] = []
        for model in self.models:
            until = self.recovery(model, now)
            if until is None or until < self.end:
                return None
            outs.append(f"{model} {'disabled' if until == math.inf else 'cooling down'}")
        return (
            f"no model can be tried again within the request's {self.seconds:g}s deadline "
            f"({', '.join(outs)})"
        )


class _Skipped(Exception):
    """A model that turned unhealthy between the plan and its turn."""

    def __str__(self) -> str:
        return "skipped: unhealthy"


def _is_final(error: BaseException) -> bool:
    """A failure no other model can fix (the client's own bad request)."""
    return isinstance(error, ProviderError) and not error.retryable


def failover(
    router_id: str,
    router: RouterHealth,
    attempt: Callable[[str], Observable[T]],
    *,
    scheduler: abc.SchedulerBase | None = None,
    is_final: Callable[[T], bool] | None = None,
    handoff: Handoff | None = None,
    budget: Budget | None = None,
) -> Observable[T | Reset]:
    """One pass over the router's available models; the first to finish wins.

    attempt(m1): --a--#          attempt(m2): --x--y--|
    result:      --a--R(m1)--x--y--|
    All attempts failed: error `AllModelsUnavailable` (or a non-retryable
    `ProviderError`, e.g. a bad request, at once without trying further models).
    Health is told about every success, failure and abandoned attempt.

    `is_final(item)` marks an item that completes the answer (a chunk with a
    finish_reason): the attempt counts as a success when it passes, before the
    consumer (whose terminal rule disposes the request at that item) sees it.

    `handoff` (one per request) replaces the Reset: it hears `broke` instead, and
    `before(model)` may return the Reset to emit ahead of the next attempt.
    `budget` (one per request) starts with the first pass; no attempt starts once
    it is spent (the pass ends with `AllModelsUnavailable` saying so):
    budget 5, attempt(m1) stalls and its guard cuts it at the budget's end:
    attempt(m1): -------#(5)     result: -------#(5, AllModelsUnavailable)
    """

    def subscribe(
        observer: abc.ObserverBase[T | Reset], scheduler_: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        sched = require_scheduler(scheduler, scheduler_, "failover")
        now = seconds(sched)
        if budget is not None:
            budget.start(now)
        plan = router.plan(now)
        if not plan:
            observer.on_error(AllModelsUnavailable(router_id, []))
            return Once()
        run: _Pass[T] = _Pass(
            router_id, router, attempt, plan, observer, sched, scheduler_, is_final
        )
        run.handoff = handoff
        run.budget = budget
        run.next()
        return Once(run.dispose)

    return Observable(subscribe)


class _Pass(Generic[T]):
    """One subscription of `failover`: the plan, where it stands, the live attempt."""

    __slots__ = (
        "attempt",
        "budget",
        "count",
        "current",
        "done",
        "failures",
        "final",
        "first",
        "generation",
        "handoff",
        "index",
        "inherited",
        "is_final",
        "live",
        "model",
        "observer",
        "plan",
        "router",
        "router_id",
        "sched",
        "settled",
        "started",
    )

    def __init__(
        self,
        router_id: str,
        router: RouterHealth,
        attempt: Callable[[str], Observable[T]],
        plan: list[str],
        observer: abc.ObserverBase[T | Reset],
        sched: abc.SchedulerBase,
        inherited: abc.SchedulerBase | None,
        is_final: Callable[[T], bool] | None,
    ) -> None:
        self.router_id = router_id
        self.router = router
        self.attempt = attempt
        self.plan = plan
        self.observer = observer
        self.sched = sched
        self.inherited = inherited or sched
        self.is_final = is_final
        self.index = 0
        self.failures: list[tuple[str, BaseException]] = []
        self.final: BaseException | None = None
        self.done = False
        self.current: abc.DisposableBase | None = None
        self.generation = 0
        self.live = False
        self.model = ""
        self.started = 0.0
        self.first: float | None = None
        self.count = 0
        self.settled = True
        self.handoff: Handoff | None = None
        self.budget: Budget | None = None

    def next(self) -> None:
        """Start the next available model of the plan, or end the pass."""
        router = self.router
        while not self.done:
            now = seconds(self.sched)
            budget = self.budget
            spent = budget is not None and budget.left(now) <= 1e-9
            if self.final is not None or self.index >= len(self.plan) or spent:
                self.done = True
                error = self.final
                if not isinstance(error, Exception):
                    reason = budget.exhausted() if spent and budget is not None else None
                    error = AllModelsUnavailable(self.router_id, self.failures, reason)
                self.observer.on_error(error)
                return
            model = self.plan[self.index]
            self.index += 1
            if not router.available(model, now):
                self.failures.append((model, _Skipped()))
                continue
            if self.handoff is not None:
                reset = self.handoff.before(model)
                if reset is not None:
                    self.observer.on_next(reset)
                    if self.done:
                        return
            router.begin_attempt(model, now)
            self.model, self.started, self.first, self.count = model, now, None, 0
            self.settled = False
            self.generation += 1
            generation = self.generation
            self.live = True
            try:
                source = self.attempt(model)
            except Exception as error:
                self._failed(error)
                return
            subscription = source.subscribe(
                self._item, self._failed, self._completed, scheduler=self.inherited
            )
            # an attempt that ended inside `subscribe` has moved the pass on already
            if self.live and self.generation == generation:
                self.current = subscription
            return

    def _succeed(self) -> None:
        self.settled = True
        now = seconds(self.sched)
        first = self.first
        latency = None
        if first is not None:
            per_item = (now - self.started - first) / max(1, self.count - 1)
            latency = first + per_item
        try:
            self.router.record_success(self.model, now, latency)
        except Exception:
            log.exception("health bookkeeping failed", extra={"router": self.router_id})

    def _item(self, item: T) -> None:
        if self.done:
            return
        if self.first is None:
            self.first = seconds(self.sched) - self.started
        self.count += 1
        if not self.settled and self.is_final is not None and self.is_final(item):
            self._succeed()
        self.observer.on_next(item)

    def _completed(self) -> None:
        self.live = False
        self.current = None
        if self.done:
            return
        if not self.settled:
            self._succeed()
        self.done = True
        self.observer.on_completed()

    def _failed(self, error: Exception) -> None:
        self.live = False
        self.current = None
        if self.done:
            return
        model = self.model
        self.settled = True
        try:
            self.router.record_failure(model, error, seconds(self.sched))
        except Exception:
            log.exception("health bookkeeping failed", extra={"router": self.router_id})
        self.failures.append((model, error))
        if _is_final(error):
            self.final = error
        if self.count:
            if self.handoff is None:
                self.observer.on_next(Reset(model, error))
            else:
                self.handoff.broke(model, error)
        self.next()

    def dispose(self) -> None:
        """Stop: abandon the live attempt (health hears it) and dispose it."""
        if self.done:
            return
        self.done = True
        if self.live and not self.settled:
            self.settled = True
            self.router.cancel_attempt(self.model, seconds(self.sched))
        current, self.current = self.current, None
        if current is not None:
            current.dispose()


def retry_passes(
    retry: RetryConfig,
    rng: random.Random,
    *,
    scheduler: abc.SchedulerBase | None = None,
    budget: Budget | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Resubscribe a failed pass after an exponential backoff, up to `max_retries`.

    Only `AllModelsUnavailable` is retried; the last pass's error is passed on
    with no wait after it (naming the failures of the last pass that tried a
    model, should a later pass find every model cooling down).
    With min 2 s, x2, max 5 s and no jitter:
    pass:   -#            (passes start at 0, 2, 6, 11)
    result: -----------#  (error at 11 + the last pass's time)
    With a `budget` (the same object failover was given), a pass that would start
    at or after the budget's end, or while every model is out (disabled, cooling
    down) past it, is not waited for: the error comes at once, with the reason.
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            passes: _Passes[T] = _Passes(source, observer, retry, rng, scheduler, scheduler_)
            passes.budget = budget
            passes.start()
            return Once(passes.dispose)

        return Observable(subscribe)

    return operator


class _Passes(Generic[T]):
    """One subscription of `retry_passes`: the live pass (or the timer before the next).

    A class rather than closures: two closures that call each other form a reference
    cycle that only the garbage collector frees, once per request.
    """

    __slots__ = (
        "budget",
        "current",
        "disposed",
        "generation",
        "number",
        "observer",
        "retry",
        "rng",
        "scheduler",
        "seen",
        "source",
        "subscription_scheduler",
    )

    def __init__(
        self,
        source: Observable[T],
        observer: abc.ObserverBase[T],
        retry: RetryConfig,
        rng: random.Random,
        scheduler: abc.SchedulerBase | None,
        subscription_scheduler: abc.SchedulerBase | None,
    ) -> None:
        self.source = source
        self.observer = observer
        self.retry = retry
        self.rng = rng
        self.scheduler = scheduler
        self.subscription_scheduler = subscription_scheduler
        # failures seen by earlier passes of this subscription: a pass that finds
        # every model cooling down names them instead of saying "all unhealthy"
        self.seen: list[tuple[str, BaseException]] = []
        self.number = 0
        self.generation = 0
        self.current: abc.DisposableBase | None = None
        self.disposed = False
        self.budget: Budget | None = None

    def _replace(self, subscription: abc.DisposableBase | None) -> None:
        previous, self.current = self.current, subscription
        if previous is not None:
            previous.dispose()

    def start(self, _: abc.SchedulerBase | None = None, __: Any = None) -> None:
        """Subscribe one pass."""
        self.generation += 1
        generation = self.generation
        subscription = self.source.subscribe(
            self.observer.on_next,
            self._failed,
            self._completed,
            scheduler=self.subscription_scheduler,
        )
        # a pass that ended inside `subscribe` has moved on (or finished) already
        if self.generation == generation and not self.disposed:
            self._replace(subscription)

    def _completed(self) -> None:
        self.generation += 1
        self.current = None
        self.observer.on_completed()

    def _failed(self, error: Exception) -> None:
        self.generation += 1
        self.current = None
        if isinstance(error, AllModelsUnavailable):
            if error.failures:
                self.seen[:] = error.failures
            elif self.seen:
                error = AllModelsUnavailable(error.router_id, self.seen)
        number = self.number
        if not isinstance(error, AllModelsUnavailable) or number >= self.retry.max_retries:
            self.observer.on_error(error)
            return
        try:
            sched = require_scheduler(self.scheduler, self.subscription_scheduler, "retry_passes")
        except ValueError as missing:
            self.observer.on_error(missing)
            return
        delay = backoff_delay(self.retry, number, self.rng)
        budget = self.budget
        if budget is not None and isinstance(error, AllModelsUnavailable):
            if error.reason is not None:  # the pass ended on the budget: nothing to wait for
                self.observer.on_error(error)
                return
            now = seconds(sched)
            futile = budget.futile(now + delay, now)
            if futile is not None:
                self.observer.on_error(
                    AllModelsUnavailable(error.router_id, error.failures, futile)
                )
                return
        self.number = number + 1
        self._replace(sched.schedule_relative(delay, self.start))

    def dispose(self) -> None:
        """Stop the live pass or the pending one."""
        self.disposed = True
        self._replace(None)
