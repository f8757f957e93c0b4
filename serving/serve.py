"""A serving process: one alone, or one worker of several.

A config, host and port in; `serve` runs the app until SIGTERM/SIGINT, then drains,
and returns the exit status. SIGHUP (and `sluice reload`) reloads the config.
`serve_worker` is a worker's entry point (spawned by `serving.supervisor`);
`run_loop` chooses the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from config import SluiceConfig
from gateway.app import build_app
from observability.logs import configure_logging
from security.exposure import is_loopback
from security.redact import Redactor, config_secrets
from serving.crashes import log_crashes, log_loop_exception
from serving.drain import drain
from serving.gc_tuning import tune_garbage_collector
from serving.metrics_state import publish_metrics_state
from serving.reload import CONFIG_SOURCE, RELOADER, ConfigSource
from serving.supervisor import BLOCKED_AT_START, STOP_SIGNALS
from serving.triggers import Triggers
from serving.worker import WorkerSpec, tag_logs, watch_supervisor
from transport import loop as event_loop
from transport.http_guard import guard_connections

log = logging.getLogger("sluice.server")


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on a new event loop and return its result: the one place a serving
    process (single, or each worker) chooses its loop (uvloop where installed)."""
    return event_loop.run(main)


def serve_worker(spec: WorkerSpec) -> None:
    """A worker process of `sluice serve --workers N`: serve `spec` until drained;
    the exit status is `serve`'s (run by the supervisor, in a spawned process)."""
    os.setpgrp()  # signals reach the supervisor alone; it forwards them
    config = spec.config
    configure_logging(config.server.log_level, redact=Redactor(config_secrets(config)))
    tag_logs(spec)
    log_crashes()
    code = run_loop(serve(config, spec.host, spec.port, worker=spec, config_path=spec.config_path))
    if code:
        sys.exit(code)


async def serve(
    config: SluiceConfig,
    host: str,
    port: int,
    worker: WorkerSpec | None = None,
    *,
    config_path: str | None = None,
    pidfile: str | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then drain (a second signal exits at once).
    SIGHUP reloads `config_path` (None: the embedded default), see `serving.reload`;
    alone, the process writes `pidfile` and watches the file if the config says so.

    As one `worker` of several: share the port (SO_REUSEPORT), the limit store
    and the metrics directory, and drain too if the supervisor goes away."""
    app = build_app(config, worker=worker)
    app[CONFIG_SOURCE] = ConfigSource(config_path, host)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    guard_connections(runner)
    site = web.TCPSite(runner, host, port, reuse_port=worker is not None)
    await site.start()
    publishing = asyncio.create_task(publish_metrics_state(app)) if worker else None
    tune_garbage_collector()
    log.info("listening", extra={"host": host, "port": port, "loop": event_loop.loop_name()})
    if not config.auth.keys and (worker is None or worker.slot == 0):
        if is_loopback(host):
            log.warning(
                "no client API keys configured: serving without authentication, on "
                "loopback only (add auth.keys to serve other machines)",
                extra={"host": host},
            )
        else:
            log.warning(
                "no client API keys configured and auth.allow_unauthenticated is true: "
                "anyone who reaches this address can use Sluice",
                extra={"host": host},
            )
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(log_loop_exception)
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now", extra={"signal": sig.name})
            logging.shutdown()
            os._exit(1)
        log.info("signal received: draining", extra={"signal": sig.name})
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    alone = worker is None  # else the supervisor holds the pidfile and watches the file
    triggers = Triggers(
        loop,
        app[RELOADER].reload,
        watch=config_path if alone and config.server.watch_config else None,
        pidfile=pidfile if alone else None,
    )
    # a supervisor's workers start with these blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED_AT_START)
    if worker is not None:
        watch_supervisor(loop, stop)
    await stop.wait()
    triggers.stop()
    await drain(app, config.server.drain_grace)
    if publishing is not None:
        publishing.cancel()
    await runner.cleanup()
    log.info("stopped")
    logging.shutdown()
    return 0
