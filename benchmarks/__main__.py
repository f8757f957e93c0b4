"""`python -m benchmarks chat|speak|listen|converse|scaling|embed|all [options]`: run
suites, write JSON, Markdown, PNGs.

Each suite is an entry in `SUITES`: a function `(args, ctx) -> (result, markdown)`.
`all` runs every registered suite in order. Per suite run the output folder gets
`<suite>-<stamp>.json` (machine facts, settings, every figure), `<suite>-<stamp>.md`
and its plots; `latest.md` holds the Markdown of the latest invocation, also printed.
Every process a suite starts is stopped at the end, on error and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import chat, chat_report, converse, embed, listen, plots, scaling, speak
from benchmarks.common import ROOT, Processes, Progress, machine_facts, raised_fd_limit

RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "benchmarks" / "figures"
README = ROOT / "benchmarks" / "README.md"

SuiteRun = Callable[[argparse.Namespace, chat.Context], tuple[dict[str, Any], str]]


def run_chat(args: argparse.Namespace, ctx: chat.Context) -> tuple[dict[str, Any], str]:
    """The chatStream suite (see `benchmarks.chat`)."""
    settings = chat.ChatSettings.build(
        quick=args.quick,
        levels=args.concurrency,
        duration=args.duration,
        peer=args.peer,
        idle_sockets=args.idle_sockets,
        profile=args.profile,
        per_socket=args.per_socket,
        resume_redis=args.resume_redis,
    )
    result = chat.run(ctx, settings)
    result["analysis"] = chat_report.analyse(result)
    result["plots"] = plots.chat_plots(result, ctx.out_dir, f"chat-{ctx.stamp}")
    return result, ""


def run_speak(args: argparse.Namespace, ctx: chat.Context) -> tuple[dict[str, Any], str]:
    """The speak suite (see `benchmarks.speak`)."""
    settings = speak.SpeakSettings.build(
        quick=args.quick, levels=args.concurrency, requests=args.requests
    )
    return speak.run(ctx, settings), ""


def run_listen(args: argparse.Namespace, ctx: chat.Context) -> tuple[dict[str, Any], str]:
    """The listen suite (see `benchmarks.listen`)."""
    settings = listen.ListenSettings.build(
        quick=args.quick,
        levels=args.concurrency,
        budget=args.budget,
        gateway_workers=args.gateway_workers,
    )
    return listen.run(ctx, settings), ""


def run_converse(args: argparse.Namespace, ctx: chat.Context) -> tuple[dict[str, Any], str]:
    """The converse suite (see `benchmarks.converse`)."""
    settings = converse.ConverseSettings.build(
        quick=args.quick,
        levels=args.concurrency,
        turns=args.turns,
        together=args.together,
        profile=args.profile,
    )
    return converse.run(ctx, settings), ""


def run_scaling(args: argparse.Namespace, ctx: chat.Context) -> tuple[dict[str, Any], str]:
    """The scaling suite: `--workers 1` on one core vs N workers on every core
    (see `benchmarks.scaling`)."""
    settings = scaling.ScalingSettings.build(
        quick=args.quick, levels=args.concurrency, duration=args.duration
    )
    return scaling.run(ctx, settings), ""


def run_embed(args: argparse.Namespace, ctx: chat.Context) -> tuple[dict[str, Any], str]:
    """The embed suite (see `benchmarks.embed`)."""
    settings = embed.EmbedSettings.build(
        quick=args.quick, levels=args.concurrency, requests=args.requests
    )
    return embed.run(ctx, settings), ""


SUITES: dict[str, SuiteRun] = {
    "chat": run_chat,
    "speak": run_speak,
    "listen": run_listen,
    "converse": run_converse,
    "scaling": run_scaling,
    "embed": run_embed,
}
"""Suites by name, in the order `all` runs them."""

MARKDOWN: dict[str, Callable[[dict[str, Any], str], str]] = {
    "chat": chat_report.markdown,
    "speak": speak.markdown,
    "listen": listen.markdown,
    "converse": converse.markdown,
    "scaling": scaling.markdown,
    "embed": embed.markdown,
}


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from error
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return levels


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Sluice's benchmark suites (loopback only, bounded in time).",
    )
    p.add_argument("suite", choices=[*SUITES, "all"], help="which suite to run")
    p.add_argument("--quick", action="store_true", help="CI smoke run: under a minute")
    p.add_argument("--concurrency", type=_levels, help="levels, e.g. 1,50,200,1000")
    p.add_argument("--duration", type=float, help="seconds measured per cell")
    p.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure the peer gateway (Portkey); default: full runs yes, "
        "--quick only if already installed",
    )
    p.add_argument("--idle-sockets", type=int, help="idle sockets for the memory figure")
    p.add_argument(
        "--per-socket",
        type=int,
        default=1,
        help="chatStream requests multiplexed per websocket (default 1)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="chat: also run Sluice under cProfile during the paced load; converse: run "
        "the whole suite's Sluice under cProfile (its figures are then slower)",
    )
    p.add_argument(
        "--together",
        action="store_true",
        help="converse: every level's conversations start at once (the worst case) only; "
        "by default levels from 50 up also run with arrivals spread over one turn",
    )
    p.add_argument(
        "--requests",
        type=int,
        help="speak: requests measured per cell (default 200, quick 20); embed: (default "
        "2000, quick 100)",
    )
    p.add_argument(
        "--turns", type=int, help="converse: turns per conversation (default 5, quick 2)"
    )
    p.add_argument(
        "--budget",
        type=float,
        help="listen: seconds for stepping up concurrency per engine (default 240, quick 60)",
    )
    p.add_argument(
        "--gateway-workers",
        type=int,
        default=1,
        help="listen: Sluice with --workers N on every core (shared with the load; default "
        "1 process on the gateway core)",
    )
    p.add_argument(
        "--resume-redis",
        metavar="URL",
        help="chat: Sluice keeps its request log on this Redis (resume.redis)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    p.add_argument(
        "--publish",
        action="store_true",
        help="copy the plots to benchmarks/figures/ and the table into the README",
    )
    return p


def publish(markdown: str, result: dict[str, Any], out_dir: Path, suite: str = "chat") -> None:
    """Copy plots to benchmarks/figures/ and put `markdown` between the README's markers.

    The chat suite owns `<!-- results:start -->`...`<!-- results:end -->`; any other suite
    `<!-- results:<suite>:start -->`...`<!-- results:<suite>:end -->`.
    """
    if suite != "chat":
        _replace_between(
            f"<!-- results:{suite}:start -->", f"<!-- results:{suite}:end -->", markdown
        )
        return
    FIGURES.mkdir(exist_ok=True)
    text = markdown
    for name in result.get("plots", []):
        stable = re.sub(r"-\d{8}-\d{6}", "", name)
        shutil.copyfile(out_dir / name, FIGURES / stable)
        text = text.replace(f"![{name}]({name})", f"![{stable}](figures/{stable})")
    profile = result.get("profile") or {}
    if profile.get("file"):
        shutil.copyfile(out_dir / profile["file"], FIGURES / "chat-profile.txt")
        text = text.replace(f"`{profile['file']}`", "`figures/chat-profile.txt`")
    text = text.replace("## chatStream", "### chatStream").replace("\n### ", "\n#### ")
    text = text.replace("#### chatStream", "### chatStream")
    _replace_between("<!-- results:start -->", "<!-- results:end -->", text)


def _replace_between(start: str, end: str, text: str) -> None:
    readme = README.read_text()
    if start in readme and end in readme:
        head, rest = readme.split(start, 1)
        _, tail = rest.split(end, 1)
        README.write_text(f"{head}{start}\n{text}{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suites; 0 on success, 130 on Ctrl-C, 1 on error."""
    args = parser().parse_args(argv)
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    out_dir: Path = args.out.resolve()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = out_dir / "logs" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(SUITES) if args.suite == "all" else [args.suite]
    facts = machine_facts()
    sections: list[str] = []
    wanted_fds = 2 * max(args.idle_sockets or 10_000, *(args.concurrency or [1000])) + 1024
    try:
        with raised_fd_limit(wanted_fds), Processes(log_dir) as processes:
            for name in names:
                progress = Progress(total=1)
                ctx = chat.Context(out_dir, stamp, log_dir, processes, progress)
                try:
                    result, _ = SUITES[name](args, ctx)
                finally:
                    progress.close()
                result["machine"] = facts
                result["command"] = command
                path = out_dir / f"{name}-{stamp}.json"
                path.write_text(json.dumps(result, indent=1))
                markdown = MARKDOWN[name](result, command)
                (out_dir / f"{name}-{stamp}.md").write_text(markdown)
                sections.append(markdown)
                print(f"wrote {path}", file=sys.stderr)
                if args.publish:
                    publish(markdown, result, out_dir, name)
    except KeyboardInterrupt:
        print("\ninterrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    text = "\n".join(sections)
    (out_dir / "latest.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
