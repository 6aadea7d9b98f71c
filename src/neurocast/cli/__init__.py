"""The ``neurocast`` command. It only parses arguments and wires library calls together.

Conventions: bad input, and a disk, folder or permission that refuses a write, exit with
status 2 and one line on stderr (a traceback only with ``--debug``); commands that create a
run directory or a store print its path as the last line of standard output; progress and
logs go to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from neurocast.errors import NeurocastError

EXIT_BAD_INPUT = 2

#: (group or None, name) -> (help, add_args, run); filled by the modules in this package.
COMMANDS: dict[tuple[str | None, str], tuple[str, Callable, Callable]] = {}
GROUP_HELP = {"data": "inspect recordings and list data formats", "config": "inspect configs",
              "fly": "task-train the fly visual system and diagnose how realistic a network is"}


def register(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None], group: str | None = None):
    """Register a (sub-)command: ``add_args(parser)`` declares its arguments; the decorated
    function runs it and returns an exit status (None = 0)."""

    def wrap(run):
        COMMANDS[(group, name)] = (help, add_args, run)
        return run

    return wrap


def with_overrides(p: argparse.ArgumentParser) -> None:
    """Declare that the command takes dotted config overrides (any --section.key value)."""
    p.set_defaults(_accepts_overrides=True)
    p.epilog = ((p.epilog or "") + " Config overrides: --section.key value (e.g. --training.time-units 20; "
                "hyphens or underscores; see the README's config reference).").strip()


def emit_path(path) -> None:
    """The last line of stdout of commands that create a run or a store (rank 0 only under torchrun)."""
    if os.environ.get("RANK", "0") != "0":
        return
    sys.stdout.flush()
    print(str(path), flush=True)


# ---------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurocast",
        allow_abbrev=False,
        description="Forecast neural population activity: latent dynamics of connectome-constrained "
        "systems and multi-session forecasting with test-time adaptation.",
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (CI, clusters)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    groups: dict[str, argparse._SubParsersAction] = {}
    for (group, name), (help_, add_args, run) in sorted(COMMANDS.items(),
                                                        key=lambda kv: (kv[0][0] or kv[0][1], kv[0][1])):
        target = sub
        if group is not None:
            if group not in groups:
                gp = sub.add_parser(group, help=GROUP_HELP.get(group, group), description=GROUP_HELP.get(group),
                                    allow_abbrev=False)
                groups[group] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
                groups[group].required = True
            target = groups[group]
        p = target.add_parser(name, help=help_, description=help_, allow_abbrev=False)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def _load_commands() -> None:
    """Import the modules that register commands (cheap: heavy imports happen inside commands)."""
    from neurocast.cli import (  # noqa: F401
        adapt_cmds,
        analyze_cmds,
        config_cmds,
        data_cmds,
        demo_cmds,
        experiment_cmds,
        fly_cmds,
        sim_cmds,
        train_cmds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        _load_commands()
        parser = build_parser()
        args, extras = parser.parse_known_args(argv)
        if extras and not getattr(args, "_accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        args.overrides = [e for e in extras if e != "--"]
        if args.quiet:
            os.environ["NEUROCAST_QUIET"] = "1"
        code = args._run(args)
        return int(code or 0)
    except NeurocastError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # an internal error: one line, traceback with --debug
        if debug:
            raise
        from neurocast.errors import storage_error

        env = storage_error(exc, action="access")  # disk full, read-only, permission: the environment
        if env is not None:
            print(f"error: {env}", file=sys.stderr)
            return EXIT_BAD_INPUT
        msg = str(exc).splitlines()[0] if str(exc) else ""
        print(f"internal error: {type(exc).__name__}: {msg} (run with --debug for the traceback)", file=sys.stderr)
        return 1


