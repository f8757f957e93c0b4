"""Running Sluice on every core: a supervisor and its worker processes on one port.

`serving.supervisor.Supervisor` starts `--workers N` processes that each serve the
same port (SO_REUSEPORT) on their own event loop, restarts one that dies, and
forwards SIGTERM/SIGINT so each drains. `serving.worker` is what a worker needs
from its supervisor; `serving.cores` counts the cores the process may use.
"""
