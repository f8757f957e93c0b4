"""The terminal rule: every request ends with exactly one terminal frame.

Whatever happens upstream (a terminal frame, an error, a silent completion), the
request's frame stream ends with exactly one frame marked `terminal`, and nothing
follows it: at the terminal frame the upstream is disposed. This is
`operators.request_scope` with no later messages; requests use that whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable

from operators.request_scope import request_scope
from protocol.frames import Frame


def _never(_msg: Any) -> bool:
    return False


def terminal_rule(
    error_frame: Callable[[Exception], Frame], incomplete_frame: Callable[[], Frame]
) -> Callable[[Observable[Frame]], Observable[Frame]]:
    """Frames in, frames out, ending at exactly one terminal frame.

    source: -a-b-T-c|   result: -a-b-T|     (c never leaves)
    source: -a-#        result: -a-E|       (E = error_frame(error), terminal)
    source: -a-|        result: -a-I|       (I = incomplete_frame(), terminal)
    `error_frame` and `incomplete_frame` must return terminal frames.
    """

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def unreachable(_msg: Any) -> Frame:
            raise AssertionError("terminal_rule has no later messages")

        return request_scope(
            lambda _inputs: source,
            reactivex.never(),
            is_cancel=_never,
            cancelled_frame=unreachable,
            error_frame=error_frame,
            incomplete_frame=incomplete_frame,
        )

    return operator
