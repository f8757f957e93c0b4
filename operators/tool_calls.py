"""Tool-call assembly: an adapter's raw `ToolCallDelta` fragments in, whole calls out.

`ToolCallHold` is one attempt's state: called with each `ChatDelta`, it returns
the delta to pass on (or None to withhold it). Text passes at once; the
fragments of each call are held until the call is complete — another call's
fragment arrives (vendors stream calls one after another) or the answer
finishes, and its arguments parse as a JSON object — then the call leaves as
one `ToolCallDelta` with id, name and all its arguments. A call that has not
parsed by the answer's end, has no name, or goes on after it was sent fails the
attempt (`ProviderError` PROTOCOL), so the router tries the next model and the
client never sees half a call.
`fragments=True` passes fragments through as they come instead.

Either way an answer that made calls finishes with `tool_calls` (some vendors
say `stop`), and a call the vendor sent without an id gets one.

The chat router fuses the hold into its per-attempt guard (`guard_attempt`'s
`tag`), so a held call still counts as traffic for the idle deadline and no
operator is added per attempt; `hold_tool_calls()` is the same rule as a
stand-alone operator.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

from reactivex import Observable, abc

from operators.scheduling import Once
from protocol import jsoncodec
from providers.types import ChatDelta, ErrorCategory, ProviderError, ToolCallDelta


class ToolCallHold:
    """One attempt's tool calls: `hold(delta)` -> the delta to send, or None.

    `label` names the model in errors (`router/model`).
    """

    __slots__ = ("calls", "current", "fragments", "label", "made", "sent")

    def __init__(self, label: str = "", *, fragments: bool = False) -> None:
        self.label = label
        self.fragments = fragments
        self.calls: dict[int, list[str | None]] = {}  # index -> [id, name, arguments...]
        self.sent: set[int] = set()
        self.current: int | None = None
        self.made = False

    def __call__(self, delta: ChatDelta) -> ChatDelta | None:
        """One delta of the attempt in; what the client may see of it out."""
        fragments = delta.tool_calls
        finish = delta.finish_reason
        if not fragments and finish is None:
            return delta  # text: the common case costs two checks
        if self.fragments:
            return self._pass(delta)
        done: list[ToolCallDelta] = []
        for fragment in fragments:
            index = fragment.index
            if index in self.sent:
                if fragment.arguments.strip() or fragment.name:
                    raise ProviderError(
                        ErrorCategory.PROTOCOL,
                        f"{self._where()}tool call {index} went on after it was complete",
                    )
                continue
            if index != self.current:
                # another call starts: the calls before it are done when they parse
                # (a vendor that interleaves parallel calls keeps the rest open)
                for other in sorted(self.calls):
                    if other == index:
                        continue
                    ready = self._complete(other)
                    if ready is not None:
                        done.append(ready)
                self.current = index
            call = self.calls.get(index)
            if call is None:
                self.calls[index] = [fragment.id, fragment.name, fragment.arguments]
                self.made = True
            else:
                if fragment.id and not call[0]:
                    call[0] = fragment.id
                if fragment.name and not call[1]:
                    call[1] = fragment.name
                call.append(fragment.arguments)
        if finish is not None:
            for index in sorted(self.calls):
                done.append(self._close(index))
            self.current = None
            if self.made:
                finish = "tool_calls"
        if not done and not delta.content and finish is None:
            return None
        return replace(delta, tool_calls=tuple(done), finish_reason=finish)

    def _pass(self, delta: ChatDelta) -> ChatDelta:
        fragments = delta.tool_calls
        if fragments:
            self.made = True
            if any(f.id is None and f.index not in self.calls for f in fragments):
                fragments = tuple(self._named(f) for f in fragments)
                delta = replace(delta, tool_calls=fragments)
            for fragment in fragments:
                self.calls.setdefault(fragment.index, [])
        if delta.finish_reason is not None and self.made:
            delta = replace(delta, finish_reason="tool_calls")
        return delta

    def _named(self, fragment: ToolCallDelta) -> ToolCallDelta:
        if fragment.id is not None or fragment.index in self.calls:
            return fragment
        return replace(fragment, id=_new_id())

    def _where(self) -> str:
        return f"{self.label}: " if self.label else ""

    def _complete(self, index: int) -> ToolCallDelta | None:
        """Call `index` when it has a name and its arguments parse (sent: held no more)."""
        call = self.calls[index]
        if not call[1]:
            return None
        arguments = "".join(piece or "" for piece in call[2:]).strip() or "{}"
        if not isinstance(_parsed(arguments), dict):
            return None
        del self.calls[index]
        self.sent.add(index)
        return ToolCallDelta(index, call[0] or _new_id(), call[1], arguments)

    def _close(self, index: int) -> ToolCallDelta:
        """Call `index` at the answer's end: complete, or the attempt fails."""
        ready = self._complete(index)
        if ready is not None:
            return ready
        name = self.calls[index][1]
        if not name:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._where()}tool call {index} has no function name"
            )
        raise ProviderError(
            ErrorCategory.PROTOCOL,
            f"{self._where()}tool call {index} ({name}) ended with arguments that are not "
            "a JSON object",
        )


def _parsed(text: str) -> object:
    try:
        return jsoncodec.loads(text)
    except ValueError:
        return None


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def hold_tool_calls(
    label: str = "", *, fragments: bool = False
) -> Callable[[Observable[ChatDelta]], Observable[ChatDelta]]:
    """Raw deltas in, deltas with whole tool calls out (module doc).

    source: -t-a(0:{"c)-b(0:ity")-c(1:{})-f|     (a, b: call 0's fragments)
    result: -t---------------------c'(0 whole)-f'(1 whole, tool_calls)|
    A call whose arguments do not parse ends the stream with a PROTOCOL error.
    """

    def operator(source: Observable[ChatDelta]) -> Observable[ChatDelta]:
        def subscribe(
            observer: abc.ObserverBase[ChatDelta], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            hold = ToolCallHold(label, fragments=fragments)
            failed = [False]
            upstream: list[abc.DisposableBase] = []

            def on_next(delta: ChatDelta) -> None:
                if failed[0]:
                    return
                try:
                    out = hold(delta)
                except ProviderError as error:
                    failed[0] = True
                    if upstream:
                        upstream.pop().dispose()
                    observer.on_error(error)
                    return
                if out is not None:
                    observer.on_next(out)

            def on_error(error: Exception) -> None:
                if not failed[0]:
                    failed[0] = True
                    observer.on_error(error)

            def on_completed() -> None:
                if not failed[0]:
                    failed[0] = True
                    observer.on_completed()

            subscription = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler_)
            if failed[0]:
                subscription.dispose()
            else:
                upstream.append(subscription)

            def dispose() -> None:
                failed[0] = True
                while upstream:
                    upstream.pop().dispose()

            return Once(dispose)

        return Observable(subscribe)

    return operator
