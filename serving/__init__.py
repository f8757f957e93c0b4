"""Running Sluice: the command line, a serving process, and every core.

`serving.cli.main` parses `sluice serve|reload|check-config|hash-key`;
`serving.serve.serve` runs one serving process until a signal, then
`serving.drain` drains it; `serving.crashes` sends uncaught errors to the log and
`serving.gc_tuning` sets the collector once the process listens.

`serving.supervisor.Supervisor` starts `--workers N` processes that each serve the
same port (SO_REUSEPORT) on their own event loop, restarts one that dies, and
forwards SIGTERM/SIGINT so each drains. `serving.worker` is what a worker needs
from its supervisor, `serving.metrics_state` what it publishes for the others'
scrapes; `serving.cores` counts the cores the process may use. `serving.reload`,
`serving.triggers` and `serving.live` reload the config in place.
"""
