"""Failover across a router's models, and retry of whole passes with backoff.

`failover(...)` is a source: one request's answer, produced by trying the
router's models in the order its strategy gives, built from `catch_with_iterable`
(the next model is subscribed when the previous one errors). It is generic over
the item type, so chat, speak and listen share it.

Items flow through unchanged. When an attempt fails after it already emitted
items, a `Reset` is emitted before moving on, so the consumer can drop that
partial output (Glide's `model_unavailable`). Failover sits above retry: each
pass tries every available model once; a whole failed pass is retried after an
exponential backoff (`retry_passes`), and an attempt is never retried in place.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops

from config.models import RetryConfig
from operators.scheduling import defer_scheduled, seconds
from providers.types import ProviderError
from routing.backoff import backoff_delay

T = TypeVar("T")


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
    """Every model of the router failed or was unavailable for this request."""

    def __init__(self, router_id: str, failures: Sequence[tuple[str, BaseException]]) -> None:
        self.router_id = router_id
        self.failures = list(failures)
        if failures:
            causes = "; ".join(f"{model}: {error}" for model, error in failures)
            text = f"all models of router {router_id!r} failed: {causes}"
        else:
            text = f"no model of router {router_id!r} is available right now (all unhealthy)"
        super().__init__(text)


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
    """

    def one_pass(sched: abc.SchedulerBase) -> Observable[T | Reset]:
        plan = router.plan(seconds(sched))
        if not plan:
            return reactivex.throw(AllModelsUnavailable(router_id, []))
        failures: list[tuple[str, BaseException]] = []
        final: list[BaseException] = []

        def one_attempt(model_id: str) -> Observable[T | Reset]:
            def start(sched_: abc.SchedulerBase) -> Observable[T | Reset]:
                started = seconds(sched_)
                if not router.available(model_id, started):
                    failures.append((model_id, _Skipped()))
                    return reactivex.throw(_Skipped())
                router.begin_attempt(model_id, started)
                state: dict[str, Any] = {"first": None, "count": 0, "settled": False}

                def on_next(item: T) -> None:
                    if state["first"] is None:
                        state["first"] = seconds(sched_) - started
                    state["count"] += 1
                    if is_final is not None and not state["settled"] and is_final(item):
                        on_completed()

                def on_completed() -> None:
                    if state["settled"]:
                        return
                    state["settled"] = True
                    now = seconds(sched_)
                    first = state["first"]
                    latency = None
                    if first is not None:
                        per_item = (now - started - first) / max(1, state["count"] - 1)
                        latency = first + per_item
                    router.record_success(model_id, now, latency)

                def on_abandon() -> None:
                    if not state["settled"]:
                        router.cancel_attempt(model_id, seconds(sched_))

                def on_failure(error: Exception, _: Any) -> Observable[T | Reset]:
                    state["settled"] = True
                    router.record_failure(model_id, error, seconds(sched_))
                    failures.append((model_id, error))
                    if _is_final(error):
                        final.append(error)
                    if state["count"]:
                        return reactivex.concat(
                            reactivex.of(Reset(model_id, error)), reactivex.throw(error)
                        )
                    return reactivex.throw(error)

                items: Observable[T | Reset] = attempt(model_id).pipe(
                    ops.do_action(on_next=on_next, on_completed=on_completed),
                    ops.finally_action(on_abandon),
                )
                return items.pipe(ops.catch(on_failure))

            return defer_scheduled(start, scheduler, "failover")

        def attempts() -> Iterator[Observable[T | Reset]]:
            for model_id in plan:
                if final:
                    return
                yield one_attempt(model_id)

        def summarize(error: Exception, _: Any) -> Observable[T | Reset]:
            if final and isinstance(final[0], Exception):
                return reactivex.throw(final[0])
            return reactivex.throw(AllModelsUnavailable(router_id, failures))

        return reactivex.catch_with_iterable(attempts()).pipe(ops.catch(summarize))

    return defer_scheduled(one_pass, scheduler, "failover")


def retry_passes(
    retry: RetryConfig,
    rng: random.Random,
    *,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Resubscribe a failed pass after an exponential backoff, up to `max_retries`.

    Only `AllModelsUnavailable` is retried; the last pass's error is passed on
    with no wait after it (naming the failures of the last pass that tried a
    model, should a later pass find every model cooling down).
    With min 2 s, x2, max 5 s and no jitter:
    pass:   -#            (passes start at 0, 2, 6, 11)
    result: -----------#  (error at 11 + the last pass's time)
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def passes(_: abc.SchedulerBase) -> Observable[T]:
            # failures seen by earlier passes of this subscription: a pass that finds
            # every model cooling down names them instead of saying "all unhealthy"
            seen: list[tuple[str, BaseException]] = []

            def attempt(number: int) -> Observable[T]:
                def on_error(error: Exception, _: Any) -> Observable[T]:
                    if isinstance(error, AllModelsUnavailable):
                        if error.failures:
                            seen[:] = error.failures
                        elif seen:
                            error = AllModelsUnavailable(error.router_id, seen)
                    if not isinstance(error, AllModelsUnavailable) or number >= retry.max_retries:
                        return reactivex.throw(error)
                    delay = backoff_delay(retry, number, rng)

                    def later(sched: abc.SchedulerBase) -> Observable[T]:
                        return reactivex.timer(delay, scheduler=sched).pipe(
                            ops.flat_map(lambda _: attempt(number + 1))
                        )

                    return defer_scheduled(later, scheduler, "retry_passes")

                return source.pipe(ops.catch(on_error))

            return attempt(0)

        return reactivex.defer(passes)

    return operator
