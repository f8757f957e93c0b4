"""One provider attempt's guards in one operator: deadlines, output rule, tag, telemetry.

A chat attempt used to be four operators in a row (`deadlines`, `require_output`,
`map(tag)`, `instrument_attempt`): four subscriptions per attempt and four hops
per chunk. `guard_attempt` does the same work in one. `operators.deadlines` and
`operators.instrument` build their operators from it, so each rule keeps its own
virtual-time tests while the chat path pays for one operator.

Per item, in order: the deadline clock notes it; the output rule may fail the
attempt (a closing item with nothing counted); the item is tagged; telemetry
hears it (success at an item `is_final` accepts, before it travels on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc

from observability.telemetry import AttemptTelemetry, RequestTelemetry
from operators.scheduling import Once, require_scheduler, seconds
from providers.types import ErrorCategory, ProviderError

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds to the first item, between items, and for the whole attempt.

    `end` (scheduler seconds, absolute) is the request's own deadline: the whole
    attempt ends by then even when `total` would allow longer.
    """

    first: float
    idle: float
    total: float
    what: str = "chunk"
    end: float | None = None


@dataclass(frozen=True, slots=True)
class OutputRule(Generic[T]):
    """The attempt must emit an item that `counts` before it ends; it ends at
    completion or at an item that `closes` (withheld when nothing counted)."""

    counts: Callable[[T], bool]
    closes: Callable[[T], bool] | None = None
    what: str = "output"


@dataclass(frozen=True, slots=True)
class Watch(Generic[U]):
    """Report the attempt to a request's telemetry as `model` on `provider`;
    `is_final(item)` marks the (tagged) item that makes it a success."""

    request: RequestTelemetry
    model: str
    provider: str
    is_final: Callable[[U], bool] | None = None


def guard_attempt(
    *,
    deadlines: Deadlines | None = None,
    output: OutputRule[T] | None = None,
    tag: Callable[[T], U | None] | None = None,
    watch: Watch[U] | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[T]], Observable[U]]:
    """One attempt's items in, the same items (tagged) out, under its guards.

    deadlines first=3, idle=2, total=10:
    source: ---a-b--------c|
    result: ---a-b--#          (# at b+2: ProviderError TIMEOUT "no chunk for 2s")
    output rule, counts(x) false:
    source: --x--|
    result: --x--#             (ProviderError EMPTY_OUTPUT)
    A `tag` that returns None withholds that item (it still counts as arrived for
    the deadlines and the output rule):
    source: --a--b--|   tag(a) None
    result: -----b--|
    A failed guard disposes the upstream (closing the provider call). Telemetry
    hears one verdict: success (completion or the final item), failure (error),
    or abandoned (disposed first). `deadlines` needs a scheduler (given or the
    subscription's); the rest work without one.
    """

    def operator(source: Observable[T]) -> Observable[U]:
        def subscribe(
            observer: abc.ObserverBase[U], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            sched = (
                require_scheduler(scheduler, scheduler_, "deadlines")
                if deadlines is not None
                else None
            )
            guard = _Guard(observer, deadlines, output, tag, watch, sched)
            guard.start()
            upstream = source.subscribe(
                guard.on_next, guard.on_error, guard.on_completed, scheduler=scheduler_
            )
            if guard.done:
                upstream.dispose()  # it ended inside `subscribe`
            else:
                guard.upstream = upstream
            return Once(guard.dispose)

        return Observable(subscribe)

    return operator


class _Guard(Generic[T, U]):
    """The state of one subscription of `guard_attempt`."""

    __slots__ = (
        "attempt",
        "budget_cut",
        "counted",
        "deadlines",
        "done",
        "gap_timer",
        "items",
        "last",
        "observer",
        "output",
        "sched",
        "tag",
        "total_timer",
        "upstream",
        "watch",
    )

    def __init__(
        self,
        observer: abc.ObserverBase[U],
        deadlines: Deadlines | None,
        output: OutputRule[T] | None,
        tag: Callable[[T], U | None] | None,
        watch: Watch[U] | None,
        sched: abc.SchedulerBase | None,
    ) -> None:
        self.observer = observer
        self.deadlines = deadlines
        self.output = output
        self.tag = tag
        self.watch = watch
        self.sched = sched
        self.done = False
        self.items = 0
        self.last = 0.0
        self.counted = False
        self.upstream: abc.DisposableBase | None = None
        self.gap_timer: abc.DisposableBase | None = None
        self.total_timer: abc.DisposableBase | None = None
        self.attempt: AttemptTelemetry | None = None
        self.budget_cut = False

    def start(self) -> None:
        """Open the telemetry attempt and arm the deadlines."""
        if self.watch is not None:
            self.attempt = self.watch.request.attempt(self.watch.model, self.watch.provider)
        limits, sched = self.deadlines, self.sched
        if limits is not None and sched is not None:
            total = limits.total
            if limits.end is not None:
                left = max(0.0, limits.end - seconds(sched))
                if left < total:
                    total, self.budget_cut = left, True
            self.total_timer = sched.schedule_relative(total, self._overall)
            self.gap_timer = sched.schedule_relative(limits.first, self._no_first)

    # ---- deadlines -----------------------------------------------------------------

    def _overall(self, _: abc.SchedulerBase, __: Any = None) -> None:
        assert self.deadlines is not None
        if self.budget_cut:
            message = "the request's deadline ran out during this attempt"
        else:
            message = f"attempt exceeded its {self.deadlines.total:g}s deadline"
        self._fail(ProviderError(ErrorCategory.TIMEOUT, message))

    def _no_first(self, _: abc.SchedulerBase, __: Any = None) -> None:
        assert self.deadlines is not None
        limits = self.deadlines
        self._fail(
            ProviderError(ErrorCategory.TIMEOUT, f"no first {limits.what} within {limits.first:g}s")
        )

    def _check_gap(self, _: abc.SchedulerBase, __: Any = None) -> None:
        # The gap timer is not re-armed per item (that costs a timer per chunk): when
        # it fires it checks the time of the last item and re-arms for the rest of
        # the gap, so it still fires exactly `idle` after the last item.
        assert self.deadlines is not None and self.sched is not None
        idle = self.deadlines.idle
        left = self.last + idle - seconds(self.sched)
        if left <= 1e-9:
            message = f"no {self.deadlines.what} for {idle:g}s"
            self._fail(ProviderError(ErrorCategory.TIMEOUT, message))
        else:
            self.gap_timer = self.sched.schedule_relative(left, self._check_gap)

    def _stop_timers(self) -> None:
        for timer in (self.gap_timer, self.total_timer):
            if timer is not None:
                timer.dispose()
        self.gap_timer = self.total_timer = None

    # ---- items -----------------------------------------------------------------------

    def on_next(self, item: T) -> None:
        """One item of the attempt."""
        if self.done:
            return
        limits = self.deadlines
        if limits is not None and self.sched is not None:
            self.last = seconds(self.sched)
            self.items += 1
            if self.items == 1:
                if self.gap_timer is not None:
                    self.gap_timer.dispose()
                self.gap_timer = self.sched.schedule_relative(limits.idle, self._check_gap)
        try:
            rule = self.output
            if rule is not None and not self.counted:
                if rule.counts(item):
                    self.counted = True
                elif rule.closes is not None and rule.closes(item):
                    self._empty()
                    return
            tagged: Any = item if self.tag is None else self.tag(item)
            if tagged is None:
                return  # withheld by the tag
            attempt = self.attempt
            if attempt is not None:
                attempt.output()
                is_final = self.watch.is_final if self.watch is not None else None
                if is_final is not None and is_final(tagged):
                    attempt.succeeded()
        except Exception as error:  # a guard's own callback failed: so did the attempt
            self._fail(error)
            return
        self.observer.on_next(tagged)

    def on_error(self, error: Exception) -> None:
        """The attempt failed upstream: pass it on (telemetry hears it)."""
        if self.done:
            return
        self.done = True
        self.upstream = None  # it ended: nothing to dispose, and no cycle to keep
        self._stop_timers()
        if self.attempt is not None:
            self.attempt.failed(error)
        self.observer.on_error(error)

    def on_completed(self) -> None:
        """The attempt ended: a success unless the output rule is unmet."""
        if self.done:
            return
        if self.output is not None and not self.counted:
            self._empty()
            return
        self.done = True
        self.upstream = None
        self._stop_timers()
        if self.attempt is not None:
            self.attempt.succeeded()
        self.observer.on_completed()

    def _empty(self) -> None:
        assert self.output is not None
        self._fail(ProviderError(ErrorCategory.EMPTY_OUTPUT, f"ended with no {self.output.what}"))

    def _fail(self, error: Exception) -> None:
        if self.done:
            return
        self.done = True
        self._stop_timers()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.dispose()
        if self.attempt is not None:
            self.attempt.failed(error)
        self.observer.on_error(error)

    def dispose(self) -> None:
        """Unsubscribed: stop the upstream and the timers; an open attempt is abandoned."""
        if not self.done:
            self.done = True
            if self.attempt is not None:
                self.attempt.abandoned()
        self._stop_timers()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.dispose()
