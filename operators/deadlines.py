"""Deadlines for one provider attempt: first output, gap between outputs, overall.

A provider that connects but produces nothing is a failure (DESIGN section 3), so
every attempt runs under `deadlines(...)`; a missed deadline errors the stream
with `ProviderError(TIMEOUT)` and disposes the upstream (closing the provider call).
Both operators here are configurations of `operators.attempt.guard_attempt`,
which a chat attempt uses whole (deadlines, output rule, tag and telemetry in one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from reactivex import Observable, abc

from operators.attempt import Deadlines, OutputRule, guard_attempt

T = TypeVar("T")


def _never(_item: object) -> bool:
    return False


def deadlines(
    first: float,
    idle: float,
    total: float,
    *,
    what: str = "chunk",
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Fail the stream when a deadline passes (times in seconds, relative).

    first=3, idle=2, total=10:
    source: ---a-b--------c|
    result: ---a-b--#          (# at b+2: "no chunk for 2s")
    source: ----------a|
    result: ---#               (# at 3: "no first chunk within 3s")
    """
    # no tag: items leave as they came (U is T)
    return cast(
        Callable[[Observable[T]], Observable[T]],
        guard_attempt(deadlines=Deadlines(first, idle, total, what), scheduler=scheduler),
    )


def require_output(
    counts: Callable[[T], bool],
    *,
    closes: Callable[[T], bool] = _never,
    what: str = "output",
) -> Callable[[Observable[T]], Observable[T]]:
    """Fail a stream that ends without any item for which `counts(item)` holds.

    The stream ends at completion or at an item for which `closes(item)` holds
    (e.g. a final chunk); that closing item is withheld when nothing counted.
    source: --x--|   (x does not count)
    result: --x--#   ProviderError(EMPTY_OUTPUT)
    source: --f|     (f closes, nothing counted)
    result: --#
    """
    return guard_attempt(output=OutputRule(counts, closes, what))
