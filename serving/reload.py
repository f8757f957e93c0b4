"""Config reload: re-read the config file in a running process and swap it in.

    Reloader.reload() -> ReloadOutcome(outcome: applied | unchanged | rejected, ...)

What flows through one reload (all of it one synchronous step on the event loop,
so no request ever sees half a config):

- The file is read and validated as at start-up (`config.load_config`), and the
  auth settings are checked against the address the server listens on. Any
  problem rejects the whole file: each problem is logged with its file, line,
  column and field, `sluice_config_reloads_total{outcome="rejected"}` counts it,
  and the running config keeps serving untouched.
- Sections that only a restart can change (`RESTART_ONLY`: `server`, `limits`,
  `metrics`, `tracing`, `state`) keep their running values; each changed field is named
  in a warning. The rest (`routers`, `auth`) is applied:
- Routers whose block is unchanged keep their objects (providers, health).
  Changed and new routers are built afresh; removed ones leave the gateway.
  New requests look routers up in the gateway and so get the new ones; requests
  already running keep the router object they started with and finish on it.
  Routers replaced or removed are closed at shutdown, not at the reload, since
  requests and sockets may still hold them.
- Every model a provider disabled (401/403) is enabled again, in every router,
  even when the file did not change: a reload is how an operator says "the
  credentials are fixed".
- Client keys, Origins and per-key limits take effect for new requests and
  upgrades (`security.access.Access.reconfigure`); sockets already open stay
  open under the key they were admitted with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from config import ConfigError, SluiceConfig, load_config
from config.loader import DEFAULT_SOURCE, Problem
from config.models import RoutersConfig
from observability.logs import mask_in_logs
from pipelines.chat_router import ChatRouter
from pipelines.endpoint import BuildContext, SocketEndpoint
from providers.types import ChatProvider
from routing.health import DISABLED
from routing.router import ModelRouter
from security.access import Access
from security.exposure import exposure_problem
from security.hosts import HostPolicy
from security.redact import Redactor, config_secrets

log = logging.getLogger("sluice.reload")

RESTART_ONLY: tuple[str, ...] = ("server", "limits", "metrics", "tracing", "state")
"""Config sections a reload cannot change: the listening socket, the worker
processes, frame limits and the shared limit table are set up once per process."""

Outcome = Literal["applied", "unchanged", "rejected"]
OUTCOMES: tuple[Outcome, ...] = ("applied", "unchanged", "rejected")

ChatRouters = dict[str, ChatRouter]
SpeechEndpoints = dict[str, dict[str, SocketEndpoint]]
BuildChat = Callable[[SluiceConfig], tuple[ChatRouters, list[ChatProvider]]]
"""A config in, its chat routers and every provider built for them out."""
BuildSpeech = Callable[[SluiceConfig, BuildContext], SpeechEndpoints]
"""A config in, its speech endpoints by router id and kind out."""


class Swappable(Protocol):
    """The parts of a running gateway a reload replaces (`gateway.core.Gateway`)."""

    config: SluiceConfig
    chat_routers: ChatRouters
    speech: SpeechEndpoints
    redact: Redactor

    def clock(self) -> float:
        """Unix seconds."""
        ...


@dataclass(frozen=True)
class ConfigSource:
    """Where a process's config came from: the file (None: the embedded default)
    and the host it listens on (auth settings are checked against it)."""

    path: str | None
    host: str


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did: its outcome, every problem (`file:line:col: field: message`)
    when rejected, the restart-only fields that changed (kept as they were), and
    which routers were added, changed and removed."""

    outcome: Outcome
    problems: tuple[str, ...] = ()
    restart_only: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    reenabled: int = 0


def restart_only_changes(running: SluiceConfig, new: SluiceConfig) -> list[str]:
    """Two configs in; the dotted names of the fields in `RESTART_ONLY` sections
    that differ out (e.g. `server.port`)."""
    changed: list[str] = []
    for section in RESTART_ONLY:
        old_part, new_part = getattr(running, section), getattr(new, section)
        if old_part == new_part:
            continue
        for name in type(old_part).model_fields:
            if getattr(old_part, name) != getattr(new_part, name):
                changed.append(f"{section}.{name}")
    return changed


def effective_config(running: SluiceConfig, new: SluiceConfig) -> SluiceConfig:
    """The config a reload serves: `new`, with the `RESTART_ONLY` sections of `running`."""
    return new.model_copy(update={section: getattr(running, section) for section in RESTART_ONLY})


def load_for_reload(source: ConfigSource, running: SluiceConfig) -> tuple[SluiceConfig, list[str]]:
    """Read `source` again; (the effective config, with the restart-only sections
    of `running`; the restart-only fields the file changed) out, or `ConfigError`
    with every problem (also when the auth settings would expose the listening host
    without keys)."""
    new = load_config(source.path)
    refusal = exposure_problem(source.host, new.auth)
    if refusal is not None:
        raise ConfigError([Problem(source.path or DEFAULT_SOURCE, None, None, "auth", refusal)])
    return effective_config(running, new), restart_only_changes(running, new)


class ReloadMetrics:
    """`sluice_config_reloads_total{outcome}`: reloads applied, unchanged, rejected."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter(
            "sluice_config_reloads",
            "Config reloads (SIGHUP, `sluice reload`, server.watch_config) by outcome: "
            "applied, unchanged (same file; disabled models re-enabled), rejected "
            "(invalid file: the running config keeps serving). Counted per process.",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.reloads.labels(outcome)


def enable_disabled(trackers: Iterable[Any], now: float) -> int:
    """Health trackers (`ModelRouter`s; anything else is skipped) in; every model in
    them disabled by a 401/403 is reset to healthy; how many were out."""
    count = 0
    for tracker in trackers:
        if not isinstance(tracker, ModelRouter):
            continue
        for model_id in tracker.model_ids:
            health = tracker.health(model_id)
            if health.state(now) == DISABLED:
                health.reset()
                count += 1
    return count


def _trackers(gateway: Swappable) -> list[Any]:
    trackers: list[Any] = [router.health for router in gateway.chat_routers.values()]
    for by_kind in gateway.speech.values():
        for endpoint in by_kind.values():
            # listen endpoints hold their tracker, speak endpoints their router's
            trackers.append(getattr(endpoint, "health", None))
            trackers.append(getattr(getattr(endpoint, "router", None), "health", None))
    return trackers


class Reloader:
    """Reloads one process's gateway from its `ConfigSource` (see the module).

    `build_chat` / `build_speech` build routers for a config (those of
    `gateway.build`); `more_trackers()` gives health trackers of routers kept elsewhere
    (the embedding routers), whose disabled models a reload re-enables too;
    `access` and `hosts` are the app's policies, reconfigured in
    place; `after_reload()` runs once a reload is applied (state.redis: forget
    the shared disables the reload just lifted). What the reloader builds it
    closes in `aclose()` (at shutdown).
    """

    def __init__(
        self,
        gateway: Swappable,
        source: ConfigSource,
        *,
        build_chat: BuildChat,
        build_speech: BuildSpeech,
        context: BuildContext,
        access: Access,
        hosts: HostPolicy | None,
        registry: CollectorRegistry,
        after_reload: Callable[[], None] | None = None,
        more_trackers: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        self._gateway = gateway
        self._more_trackers = more_trackers
        self._after_reload = after_reload
        self.source = source
        self._build_chat = build_chat
        self._build_speech = build_speech
        self._context = context
        self._access = access
        self._hosts = hosts
        self._metrics = ReloadMetrics(registry)
        self._providers: list[ChatProvider] = []
        self._endpoints: list[SocketEndpoint] = []
        self._secrets = set(config_secrets(gateway.config))

    def reload(self) -> ReloadOutcome:
        """Read the source again and apply it, or reject it and keep serving the old one."""
        running = self._gateway.config
        try:
            new, restart_only = load_for_reload(self.source, running)
        except ConfigError as error:
            return self._reject(error.problems)
        return self._apply(running, new, restart_only)

    def _reject(self, problems: Iterable[Problem]) -> ReloadOutcome:
        listed = list(problems)
        for problem in listed:
            log.error(
                "config reload: problem",
                extra={
                    "file": problem.source,
                    "line": problem.line,
                    "column": problem.column,
                    "field": problem.path,
                    "problem": problem.message,
                },
            )
        log.error(
            "config reload rejected: the running config keeps serving",
            extra={"file": self.source.path or DEFAULT_SOURCE, "problems": len(listed)},
        )
        self._metrics.reloads.labels("rejected").inc()
        return ReloadOutcome("rejected", problems=tuple(str(p) for p in listed))

    def _apply(
        self, running: SluiceConfig, new: SluiceConfig, restart_only: list[str]
    ) -> ReloadOutcome:
        gateway = self._gateway
        old_chat, old_speech = gateway.chat_routers, gateway.speech
        self._mask_new_secrets(new)
        try:
            chat, speech, changed = self._build(new, old_chat, old_speech)
        except Exception as error:  # a provider or engine that cannot start (a model file...)
            log.exception("config reload: building the routers failed")
            where = self.source.path or DEFAULT_SOURCE
            message = f"cannot build the routers: {type(error).__name__}: {error}"
            return self._reject([Problem(where, None, None, "routers", gateway.redact(message))])
        # the swap: nothing below awaits, so no request sees half of it
        gateway.config = new
        gateway.chat_routers = chat
        gateway.speech = speech
        self._access.reconfigure(new.auth, new.limits)
        if self._hosts is not None:
            self._hosts.enforced = HostPolicy.from_config(new).enforced
        trackers = _trackers(gateway)
        if self._more_trackers is not None:
            trackers.extend(self._more_trackers())
        reenabled = enable_disabled(trackers, gateway.clock())
        if self._after_reload is not None:
            self._after_reload()
        before = set(old_chat) | {f"speech:{r}" for r in old_speech}
        after = set(chat) | {f"speech:{r}" for r in speech}
        outcome = ReloadOutcome(
            "unchanged" if new == running else "applied",
            restart_only=tuple(restart_only),
            added=tuple(sorted(after - before)),
            changed=tuple(sorted(changed)),
            removed=tuple(sorted(before - after)),
            reenabled=reenabled,
        )
        if restart_only:
            log.warning(
                "config reload: these fields change only on restart; their running values are kept",
                extra={"fields": list(restart_only)},
            )
        log.info(
            "config reloaded",
            extra={
                "file": self.source.path or DEFAULT_SOURCE,
                "outcome": outcome.outcome,
                "routers_added": list(outcome.added),
                "routers_changed": list(outcome.changed),
                "routers_removed": list(outcome.removed),
                "models_reenabled": reenabled,
                "client_keys": len(new.auth.keys),
            },
        )
        self._metrics.reloads.labels(outcome.outcome).inc()
        return outcome

    def _build(
        self, new: SluiceConfig, old_chat: ChatRouters, old_speech: SpeechEndpoints
    ) -> tuple[ChatRouters, SpeechEndpoints, list[str]]:
        """New routers for changed and added blocks, the running ones for the rest."""
        changed: list[str] = []
        fresh_language = []
        chat: ChatRouters = {}
        for router in new.language_routers:
            kept = old_chat.get(router.id)
            if kept is not None and kept.config == router:
                chat[router.id] = kept
            else:
                fresh_language.append(router)
                if kept is not None:
                    changed.append(router.id)
        fresh_speech = []
        speech: SpeechEndpoints = {}
        for speech_router in new.speech_routers:
            kept_endpoints = old_speech.get(speech_router.id)
            old_config = self._speech_config(speech_router.id)
            if kept_endpoints is not None and old_config == speech_router:
                speech[speech_router.id] = kept_endpoints
            else:
                fresh_speech.append(speech_router)
                if kept_endpoints is not None:
                    changed.append(f"speech:{speech_router.id}")
        if fresh_language:
            only = new.model_copy(update={"routers": RoutersConfig(language=fresh_language)})
            built, providers = self._build_chat(only)
            self._providers.extend(providers)
            chat.update(built)
        if fresh_speech:
            only = new.model_copy(update={"routers": RoutersConfig(speech=fresh_speech)})
            built_speech = self._build_speech(only, self._context)
            self._endpoints.extend(e for by_kind in built_speech.values() for e in by_kind.values())
            speech.update(built_speech)
        # keep the new config's order (the router listings follow it)
        chat = {r.id: chat[r.id] for r in new.language_routers}
        speech = {r.id: speech[r.id] for r in new.speech_routers}
        return chat, speech, changed

    def _speech_config(self, router_id: str) -> object:
        for router in self._gateway.config.speech_routers:
            if router.id == router_id:
                return router
        return None

    def _mask_new_secrets(self, config: SluiceConfig) -> None:
        fresh = set(config_secrets(config)) - self._secrets
        if not fresh:
            return
        self._secrets |= fresh
        self._gateway.redact = Redactor(self._secrets)
        mask_in_logs(Redactor(fresh))

    async def aclose(self) -> None:
        """Close every provider and endpoint built by a reload (at shutdown)."""
        for provider in self._providers:
            try:
                await provider.aclose()
            except Exception:
                log.exception("closing a provider failed")
        for endpoint in self._endpoints:
            try:
                await endpoint.aclose()
            except Exception:
                log.exception("closing an endpoint failed")


CONFIG_SOURCE = web.AppKey("sluice_config_source", ConfigSource)
"""Set by the serve path before start-up: the app then builds a `Reloader`."""
RELOADER = web.AppKey("sluice_reloader", Reloader)
"""The app's `Reloader` (absent when no `CONFIG_SOURCE` was set)."""
