"""The `sluice` command line.

argv in; an exit status out: `sluice serve` (one process, or a supervisor and
`--workers N` worker processes), `sluice reload`, `sluice check-config`,
`sluice hash-key`.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from collections.abc import Sequence

from config import ConfigError, check_config, load_config
from config.models import ServerConfig
from observability.logs import configure_logging
from security.exposure import exposure_problem
from security.keys import generate_key, hash_key
from security.redact import Redactor, config_secrets
from serving.cores import available_cores
from serving.crashes import log_crashes
from serving.serve import run_loop, serve, serve_worker
from serving.supervisor import Supervisor
from serving.triggers import pidfile_for, send_reload


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from error
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1 worker")
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice streaming AI gateway")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve every configured endpoint")
    serve.add_argument("--config", help="YAML config file (default: the embedded config)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument(
        "--pidfile",
        help="where to write the server's pid for `sluice reload` "
        "(default: $XDG_RUNTIME_DIR or the temp dir, sluice-PORT.pid)",
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        help="processes serving the port (default: one per core this process may use; "
        "1 runs a single process without a supervisor)",
    )
    reload = sub.add_parser(
        "reload",
        help="make a running server re-read its config (sends it SIGHUP)",
        description="Send SIGHUP to the server whose pid is in the pidfile; with --config "
        "the file is checked first and nothing is sent if it has problems.",
    )
    reload.add_argument("--config", help="check this config file before signalling")
    reload.add_argument("--pidfile", help="the server's pidfile (default: from --port)")
    reload.add_argument("--port", type=int, help="the server's port (default: 9099)")
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    hashing = sub.add_parser(
        "hash-key",
        help="hash a client API key for auth.keys (reads the key from stdin)",
        description="Print the `hash:` value for a client key in auth.keys. The key is read "
        "from standard input (never from the command line, where `ps` would show it); "
        "with --generate a new random key is made and printed first.",
    )
    hashing.add_argument("--generate", action="store_true", help="make a new random key")
    hashing.add_argument(
        "--scheme",
        choices=("sha256", "scrypt"),
        default="sha256",
        help="sha256 (default; right for generated keys) or scrypt (for keys people chose)",
    )
    return parser


def _reload_port(args: argparse.Namespace) -> int:
    """`sluice reload`'s server port: --port, else the config file's, else the default."""
    if args.port:
        return int(args.port)
    if args.config:
        with contextlib.suppress(ConfigError):
            return load_config(args.config).server.port
    return ServerConfig().port


def _hash_key_command(generate: bool, scheme: str) -> int:
    if generate:
        key = generate_key()
        print(f"key:  {key}")
        print(f"hash: {hash_key(key, scheme)}")
        return 0
    if sys.stdin.isatty():
        key = getpass.getpass("client key: ")
    else:
        key = sys.stdin.readline().strip()
    if not key:
        print("no key given on standard input", file=sys.stderr)
        return 2
    print(hash_key(key, scheme))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`sluice serve [--config F] [--host H] [--port P] [--workers N]`, `sluice
    check-config F` or `sluice hash-key [--generate] [--scheme sha256|scrypt]`."""
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        problems = check_config(args.file)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{args.file}: OK")
        return 1 if problems else 0
    if args.command == "hash-key":
        return _hash_key_command(args.generate, args.scheme)
    if args.command == "reload":
        return send_reload(args.pidfile or pidfile_for(_reload_port(args)), args.config)
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    server = config.server
    host = getattr(args, "host", None) or server.host
    port = getattr(args, "port", None) or server.port
    refusal = exposure_problem(host, config.auth)
    if refusal is not None:
        print(f"sluice: {refusal}", file=sys.stderr)
        return 2
    configure_logging(server.log_level, redact=Redactor(config_secrets(config)))
    log_crashes()
    workers = args.workers or available_cores()
    path, pidfile = args.config, args.pidfile or pidfile_for(port)
    if workers == 1:
        return run_loop(serve(config, host, port, config_path=path, pidfile=pidfile))
    supervisor = Supervisor(
        config, host, port, workers, serve_worker, config_path=path, pidfile=pidfile
    )
    return supervisor.run()
