"""A language router: its models' providers behind failover, retry and deadlines.

`ChatRouter.stream(request)` -> Observable of `ChatChunk | Reset` (one answer);
`ChatRouter.complete(request)` -> Observable of one `ChatCompletion`, assembled
from the same stream (so a sync request fails over at the first-chunk deadline
like a streamed one, and a long answer is not cut while it flows). Pipelines
depend on these observables, not on providers. Both take `only_model=` to pin
one model: the same retry, deadlines and health, failover restricted to it.

Mid-stream failures (`mid_stream` of the router):
- `restart`: Glide's semantics. A `Reset` names the model that broke; the answer
  restarts on the next model.
- `continue` (default): the next model is asked to go on from the partial answer
  (`ChatParams.continuation`), if its adapter declares it can (and the model's
  config does not say otherwise); its first chunk carries `switched_from`, and a
  repeat of the partial answer's tail is trimmed. A model that cannot continue
  gets the `restart` treatment for that hop (`Reset` first).
Tools and images: a request that needs a capability (`ChatRequest.needs`: tools,
inline images, https image URLs) goes only to the models that have it (the
adapter's flag, unless the model's `capabilities` config turns it off); when no
model has it, the answer is the error `MissingCapability`. Tool calls are held
until whole (`operators.tool_calls`), or passed as fragments under
`tool_call_streaming: fragments`; once a tool call (whole or a fragment) was sent,
a failure restarts the answer (`Reset`) even in `continue` mode: a continuation
cannot carry calls, and the next model's own calls must not follow them.
Every request runs under the router's `deadline` budget (or the request's own
`deadline_ms`, never longer), across all attempts and retry passes.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import reactivex
from reactivex import Observable, abc

from config.models import LanguageModelConfig, LanguageRouterConfig
from observability.telemetry import RequestTelemetry
from operators.aio import from_async_iterable
from operators.attempt import Deadlines, OutputRule, Watch, guard_attempt
from operators.failover import Budget, Recovery, Reset, RouterHealth, failover, retry_passes
from operators.scheduling import Once
from operators.tool_calls import ToolCallHold
from protocol.chat import Capability, ChatRequest
from providers.types import (
    ChatDelta,
    ChatProvider,
    ChatResult,
    Continuation,
    ErrorCategory,
    ProviderError,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
)
from resume.takeover import ResumedAnswer
from routing.only_models import OnlyModels

log = logging.getLogger("sluice.chat")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which model served (part of) an answer, in Glide's terms."""

    model_id: str
    provider_id: str
    model_name: str


@dataclass(frozen=True, slots=True)
class Switch:
    """Where a continued answer changed models: the model that broke and how many
    characters (Unicode code points) of the answer had been sent before it."""

    model_id: str
    provider_id: str
    at_char: int


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """One streamed piece of an answer and the model that produced it; the first
    piece after a continued switch says where it switched from."""

    model: ModelInfo
    delta: ChatDelta
    switched_from: Switch | None = None


@dataclass(frozen=True, slots=True)
class ChatCompletion:
    """A whole answer, the model that finished it, and every model whose text is
    in it (in order; one id unless the answer was continued)."""

    model: ModelInfo
    result: ChatResult
    models: tuple[str, ...] = ()


ChatEvent = ChatChunk | Reset

CAPABILITIES: tuple[Capability, ...] = ("tools", "images", "image_urls")
"""What a request may need of a model beyond text, in the order errors name them."""

_CAPABILITY_WORDS = {
    "tools": "tool calling",
    "images": "image input",
    "image_urls": "https image URLs (Sluice does not fetch them: send the image as a data: URL)",
}


class MissingCapability(Exception):
    """No model of the router (or the pinned model) can serve what the request needs."""

    def __init__(
        self, router_id: str, missing: tuple[Capability, ...], pinned: str | None = None
    ) -> None:
        self.router_id = router_id
        self.missing = missing
        self.capability = missing[0]
        where = f"model {pinned!r} of router {router_id!r}" if pinned else f"router {router_id!r}"
        words = "; ".join(_CAPABILITY_WORDS[name] for name in missing)
        names = ", ".join(missing)
        super().__init__(
            f"the request needs {names} and no enabled model of {where} has it ({words}); "
            "see capabilities in docs/providers.md"
        )


@runtime_checkable
class RecoveringHealth(Protocol):
    """Health that can tell when a cooling-down model is back (`routing.ModelRouter`)."""

    def unavailable_until(self, model_id: str, now: float) -> float | None: ...


class ChatRouter:
    """One configured language router (providers built by the caller)."""

    def __init__(
        self,
        config: LanguageRouterConfig,
        providers: Mapping[str, ChatProvider],
        health: RouterHealth,
        rng: random.Random,
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        self.config = config
        self.id = config.id
        self.health = health
        self._providers = dict(providers)
        self._models = {m.id: m for m in config.enabled_models}
        self._rng = rng
        self._scheduler = scheduler
        self._continues = {
            m.id: _continues(m, self._providers[m.id]) for m in self._models.values()
        }
        self._capable = {
            m.id: _capabilities(m, self._providers[m.id]) for m in self._models.values()
        }
        self._recovery: Recovery | None = (
            health.unavailable_until if isinstance(health, RecoveringHealth) else None
        )

    def model_info(self, model_id: str) -> ModelInfo:
        """Glide's ids for one model."""
        provider = self._providers[model_id]
        return ModelInfo(model_id, provider.provider_id, provider.model_name)

    def has_model(self, model_id: str) -> bool:
        """Whether `model_id` is one of this router's enabled models."""
        return model_id in self._models

    def continues(self, model_id: str) -> bool:
        """Whether `model_id` may be asked to continue a partial answer (its adapter's
        capability, unless the model's config overrides it)."""
        return self._continues.get(model_id, False)

    def capabilities(self, model_id: str) -> frozenset[Capability]:
        """What `model_id` can do beyond text (its adapter's flags, as its config narrows them)."""
        return self._capable.get(model_id, frozenset())

    def budget_seconds(self, request: ChatRequest) -> float:
        """The request's deadline budget: the router's `deadline`, or the request's
        `deadline_ms` when that is shorter (never longer)."""
        budget = self.config.deadline
        if request.deadline_ms is not None:
            budget = min(budget, request.deadline_ms / 1000.0)
        return budget

    def _health_for(self, only_model: str | None) -> RouterHealth:
        if only_model is None:
            return self.health
        if only_model not in self._models:
            raise KeyError(f"router {self.id!r} has no enabled model {only_model!r}")
        return PinnedHealth(self.health, only_model)

    def stream(
        self,
        request: ChatRequest,
        *,
        telemetry: RequestTelemetry | None = None,
        only_model: str | None = None,
        resumed: ResumedAnswer | None = None,
        whole_tool_calls: bool = False,
    ) -> Observable[ChatEvent]:
        """The streamed answer: chunks, and `Reset` before a restart (module doc).

        `resumed` (a request taken over from a gone instance, docs/resume.md): in
        `continue` mode the answer goes on from its text (the first chunk says
        `switched_from`); otherwise, or when `resumed.restart`, a `Reset` comes
        first and the answer starts again.

        Each attempt runs under the model's first-chunk, idle and overall
        deadlines, cut short by the request's budget; an attempt that ends
        without content is a failure. The chunk that carries a finish_reason
        settles the attempt as a success (health, latency, telemetry) before it
        travels on. `telemetry` hears each attempt. `only_model` pins the answer
        to that model (KeyError if it is not enabled). A request that needs a
        capability goes only to the models that have it (else `MissingCapability`);
        tool calls come whole unless the router streams `fragments` (and
        `whole_tool_calls` is not set).
        """
        health = self._health_for(only_model)
        budget_seconds = self.budget_seconds(request)
        models = [only_model] if only_model is not None else list(self._models)
        continuing = self.config.mid_stream == "continue"
        needs = request.needs()
        if needs:
            capable = [m for m in models if needs <= self._capable[m]]
            if not capable:
                missing = tuple(
                    name
                    for name in CAPABILITIES
                    if name in needs and not any(name in self._capable[m] for m in models)
                ) or tuple(name for name in CAPABILITIES if name in needs)
                return reactivex.throw(MissingCapability(self.id, missing, only_model))
            if len(capable) < len(models):
                health = OnlyModels(health, frozenset(capable))
                models = capable
        fragments = self.config.tool_call_streaming == "fragments" and not whole_tool_calls

        def subscribe(
            observer: abc.ObserverBase[ChatEvent], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            # per request: its budget and (continue mode) its answer so far
            budget = Budget(budget_seconds, models, self._recovery)
            answer = _Answer(self) if continuing else None
            if resumed is not None and resumed.text:
                can_continue = any(self.continues(m) for m in models)
                if answer is not None and can_continue and not resumed.restart:
                    answer.pieces.append(resumed.text)
                    if resumed.model_id in self._models:
                        answer.broken = self.model_info(resumed.model_id)
                else:
                    gone = ProviderError(
                        ErrorCategory.TRANSIENT, "the instance that ran this request is gone"
                    )
                    observer.on_next(Reset(resumed.model_id or "", gone))

            def attempt(model_id: str) -> Observable[ChatEvent]:
                return self._attempt(request, model_id, telemetry, budget, answer, fragments)

            routed = failover(
                self.id,
                health,
                attempt,
                scheduler=self._scheduler,
                is_final=_is_final_chunk,
                handoff=answer,
                budget=budget,
            ).pipe(
                retry_passes(self.config.retry, self._rng, scheduler=self._scheduler, budget=budget)
            )
            return routed.subscribe(observer, scheduler=scheduler_)

        return Observable(subscribe)

    def _attempt(
        self,
        request: ChatRequest,
        model_id: str,
        telemetry: RequestTelemetry | None,
        budget: Budget,
        answer: _Answer | None,
        fragments: bool = False,
    ) -> Observable[ChatEvent]:
        model = self._models[model_id]
        provider = self._providers[model_id]
        info = self.model_info(model_id)
        params = request.params_for(model_id, provider.model_name)
        tag: Callable[[ChatDelta], ChatEvent | None]
        if answer is None:
            tag = _plain_tag(info)
        elif answer.pieces:  # `answer.before` let this model continue the partial answer
            partial = "".join(answer.pieces)
            instruction = self.config.continuation_instruction
            params = replace(params, continuation=Continuation(partial, instruction))
            tag = _Resume(answer, info, partial)
        else:
            tag = answer.tag(info)
        if params.tools:
            tag = _holding(ToolCallHold(f"{self.id}/{model_id}", fragments=fragments), tag)
        deltas: Observable[ChatDelta] = from_async_iterable(lambda: provider.stream(params))
        watch = (
            Watch(telemetry, model_id, provider.provider_id, _is_final_chunk)
            if telemetry is not None
            else None
        )
        client = model.client
        limits = Deadlines(
            client.first_chunk_timeout, client.idle_timeout, client.timeout, "chunk", budget.end
        )
        # deadlines, the output rule, the tag and telemetry: one operator per attempt
        return deltas.pipe(
            guard_attempt(
                deadlines=limits,
                output=CHUNK_OUTPUT,
                tag=tag,
                watch=watch,
                scheduler=self._scheduler,
            )
        )

    def complete(
        self,
        request: ChatRequest,
        *,
        telemetry: RequestTelemetry | None = None,
        only_model: str | None = None,
    ) -> Observable[ChatCompletion]:
        """The whole answer, assembled from `stream` (same failover, deadlines and
        budget; the vendor is called in streaming mode, so a stalled model fails
        over at its first-chunk deadline while a long answer that flows is not cut).

        `only_model` pins the answer to that model (KeyError if it is not enabled).
        """
        events = self.stream(
            request, telemetry=telemetry, only_model=only_model, whole_tool_calls=True
        )
        return events.pipe(assemble_completion())


def assemble_completion() -> Callable[[Observable[ChatEvent]], Observable[ChatCompletion]]:
    """A streamed answer in, one `ChatCompletion` out at its final chunk.

    events: -a-b-R-c-d(final)-|     (R: a Reset, the answer restarts)
    result: -----------------(C)|   C = "cd", model of d, models (d's model)
    A continued answer is one answer: its text joined, `model` the one that
    finished it, `models` every model whose text is in it; usage and metadata
    are the final chunk's (plus `models`, comma-separated, when more than one).
    Errors pass on; a source that ends without a final chunk is a PROTOCOL error.
    """

    def operator(source: Observable[ChatEvent]) -> Observable[ChatCompletion]:
        def subscribe(
            observer: abc.ObserverBase[ChatCompletion],
            scheduler_: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            pieces: list[str] = []
            models: list[str] = []
            calls: list[ToolCallDelta] = []
            done = [False]

            def on_next(event: ChatEvent) -> None:
                if done[0]:
                    return
                if isinstance(event, Reset):
                    pieces.clear()
                    models.clear()
                    calls.clear()
                    return
                delta = event.delta
                if delta.content:
                    pieces.append(delta.content)
                if delta.tool_calls:
                    calls.extend(delta.tool_calls)
                model_id = event.model.model_id
                if not models or models[-1] != model_id:
                    models.append(model_id)
                if delta.finish_reason is None:
                    return
                done[0] = True
                metadata = dict(delta.metadata or {})
                if len(models) > 1:
                    metadata["models"] = ",".join(models)
                result = ChatResult(
                    content="".join(pieces),
                    finish_reason=delta.finish_reason,
                    usage=delta.usage or TokenUsage(),
                    metadata=metadata,
                    tool_calls=tuple(
                        ToolCall(call.id or "", call.name or "", call.arguments) for call in calls
                    ),
                )
                observer.on_next(ChatCompletion(event.model, result, tuple(models)))
                observer.on_completed()

            def on_error(error: Exception) -> None:
                if not done[0]:
                    done[0] = True
                    observer.on_error(error)

            def on_completed() -> None:
                if not done[0]:
                    done[0] = True
                    observer.on_error(
                        ProviderError(ErrorCategory.PROTOCOL, "the answer ended unfinished")
                    )

            upstream = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler_)
            return Once(upstream.dispose)

        return Observable(subscribe)

    return operator


class _Answer:
    """One request's answer so far, in `continue` mode; the failover `Handoff`.

    `pieces` is every content piece the client was sent (joined only at a switch);
    `broken` the model whose attempt broke after sending some of them.
    """

    __slots__ = ("broken", "called", "error", "pieces", "router")

    def __init__(self, router: ChatRouter) -> None:
        self.router = router
        self.called = False  # a tool call (or a fragment of one) was sent
        self.pieces: list[str] = []
        self.broken: ModelInfo | None = None
        self.error: BaseException | None = None

    def tag(self, info: ModelInfo) -> Callable[[ChatDelta], ChatEvent]:
        """The tag of an attempt that starts the answer: it notes each piece."""
        pieces = self.pieces

        def tag(delta: ChatDelta) -> ChatEvent:
            content = delta.content
            if content:
                pieces.append(content)
            if delta.tool_calls:
                self.called = True
            return ChatChunk(info, delta)

        return tag

    def broke(self, model_id: str, error: BaseException) -> None:
        """The attempt on `model_id` failed after it sent chunks."""
        self.broken = self.router.model_info(model_id)
        self.error = error

    def before(self, model_id: str) -> Reset | None:
        """Continue on `model_id` when it can (None); else restart: the Reset
        (always once a tool call was sent: a continuation cannot carry it)."""
        if not self.called and (not self.pieces or self.router.continues(model_id)):
            return None
        self.pieces.clear()
        self.called = False
        broken = self.broken.model_id if self.broken is not None else model_id
        error = self.error or ProviderError(ErrorCategory.TRANSIENT, "failed mid-stream")
        return Reset(broken, error)


OVERLAP_WINDOW = 200
"""Characters of the partial answer's tail a repeat may cover (and may be held back)."""

MIN_OVERLAP = 8
"""A repeat shorter than this (whitespace-normalised) is taken as new text, unless
it is the whole partial answer."""

_SPACE = re.compile(r"\s+")


def overlap(tail: str, head: str, final: bool) -> int | None:
    """How much of `head` (the continuation so far) repeats the end of `tail` (the
    partial answer), both whitespace-normalised: the longest such repeat of at least
    `MIN_OVERLAP` characters (or all of `tail`), 0 for none, None while `head` is
    too short to tell (unless `final`: no more text comes).

    overlap("the quick brown fox", " brown fox jumps", False) == 10
    overlap("the quick brown fox", " jumps", False) == 0
    overlap("the quick brown fox", " brown f", False) is None
    """
    size = len(tail)
    have = len(head)
    best = 0
    for k in range(max(1, min(MIN_OVERLAP, size)), size + 1):
        end = tail[size - k :]
        if k <= have:
            if head.startswith(end):
                best = k
        elif not final and end.startswith(head):
            return None
    return best


def raw_cut(text: str, normalised: int) -> int:
    """The index in `text` after its first `normalised` whitespace-normalised characters
    (a run of whitespace counts as one, and is consumed whole)."""
    index = count = 0
    while index < len(text) and count < normalised:
        if text[index].isspace():
            while index < len(text) and text[index].isspace():
                index += 1
        else:
            index += 1
        count += 1
    return index


class _Resume:
    """The tag of an attempt that continues a partial answer.

    Holds its first pieces until it is clear whether they repeat the partial
    answer's tail, trims the repeat, marks the first piece it lets through with
    `switched_from`, and notes every piece in the answer. After that, one check
    per chunk.
    """

    __slots__ = ("answer", "decided", "held", "info", "switch", "tail")

    def __init__(self, answer: _Answer, info: ModelInfo, partial: str) -> None:
        broken = answer.broken
        self.answer = answer
        self.info = info
        self.switch: Switch | None = Switch(
            broken.model_id if broken is not None else "",
            broken.provider_id if broken is not None else "",
            len(partial),
        )
        self.tail = _SPACE.sub(" ", partial[-OVERLAP_WINDOW:])
        self.held = ""
        self.decided = False

    def __call__(self, delta: ChatDelta) -> ChatEvent | None:
        content = delta.content
        if not self.decided:
            held = self.held + content
            final = delta.finish_reason is not None or bool(delta.tool_calls)
            cut = overlap(self.tail, _SPACE.sub(" ", held), final)
            if cut is None:
                self.held = held
                return None
            self.decided = True
            self.held = ""
            content = held[raw_cut(held, cut) :]
            delta = replace(delta, content=content)
        if not content and delta.finish_reason is None and not delta.tool_calls:
            return None
        if content:
            self.answer.pieces.append(content)
        if delta.tool_calls:
            self.answer.called = True
        switch, self.switch = self.switch, None
        return ChatChunk(self.info, delta, switch)


def _holding(
    hold: ToolCallHold, tag: Callable[[ChatDelta], ChatEvent | None]
) -> Callable[[ChatDelta], ChatEvent | None]:
    """`tag` behind the attempt's tool-call hold (requests that offer tools only)."""

    def held(delta: ChatDelta) -> ChatEvent | None:
        out = hold(delta)
        return None if out is None else tag(out)

    return held


def _plain_tag(info: ModelInfo) -> Callable[[ChatDelta], ChatEvent]:
    def tag(delta: ChatDelta) -> ChatEvent:
        return ChatChunk(info, delta)

    return tag


def _continues(model: LanguageModelConfig, provider: ChatProvider) -> bool:
    declared = bool(getattr(provider, "continues", False))
    override = model.capabilities.continuation
    if override is None:
        return declared
    if override and not declared:
        log.warning(
            "capabilities.continuation ignored: this adapter cannot continue a partial answer",
            extra={"model": model.id, "provider": model.provider_key},
        )
        return False
    return override


def _capabilities(model: LanguageModelConfig, provider: ChatProvider) -> frozenset[Capability]:
    out: set[Capability] = set()
    for name in CAPABILITIES:
        declared = bool(getattr(provider, name, False))
        override: bool | None = getattr(model.capabilities, name)
        if override and not declared:
            log.warning(
                "capabilities.%s ignored: this adapter does not translate it",
                name,
                extra={"model": model.id, "provider": model.provider_key},
            )
        if declared and override is not False:
            out.add(name)
    return frozenset(out)


class PinnedHealth:
    """A router's health restricted to one model: the plan holds that model or nothing.

    Everything else (availability, outcomes) goes to the router's own health, so
    a pinned request counts toward the model's error budget like any other.
    """

    def __init__(self, base: RouterHealth, model_id: str) -> None:
        self._base = base
        self.model_id = model_id

    def plan(self, now: float) -> list[str]:
        """The pinned model, or nothing while it is unavailable.

        The base plan is not asked: a strategy's order may move on when asked
        (round robin), and a pinned request must not shift the others' turns.
        """
        return [self.model_id] if self._base.available(self.model_id, now) else []

    def available(self, model_id: str, now: float) -> bool:
        """As the base says."""
        return self._base.available(model_id, now)

    def begin_attempt(self, model_id: str, now: float) -> None:
        """As the base."""
        self._base.begin_attempt(model_id, now)

    def record_success(self, model_id: str, now: float, latency: float | None) -> None:
        """As the base."""
        self._base.record_success(model_id, now, latency)

    def record_failure(self, model_id: str, error: BaseException, now: float) -> None:
        """As the base."""
        self._base.record_failure(model_id, error, now)

    def cancel_attempt(self, model_id: str, now: float) -> None:
        """As the base."""
        self._base.cancel_attempt(model_id, now)

    def unavailable_until(self, model_id: str, now: float) -> float | None:
        """As the base, when it can tell (None otherwise)."""
        if isinstance(self._base, RecoveringHealth):
            return self._base.unavailable_until(model_id, now)
        return None


def _has_content(delta: ChatDelta) -> bool:
    # a provider's content filter is an answer, not an empty one: the client is told
    return (
        bool(delta.content) or bool(delta.tool_calls) or delta.finish_reason == "content_filtered"
    )


def _is_final(delta: ChatDelta) -> bool:
    return delta.finish_reason is not None


def _is_final_chunk(event: ChatEvent) -> bool:
    return isinstance(event, ChatChunk) and event.delta.finish_reason is not None


CHUNK_OUTPUT: OutputRule[ChatDelta] = OutputRule(_has_content, _is_final, "content")
"""A streamed answer must carry content before its final chunk (or its end)."""
