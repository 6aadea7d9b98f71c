"""`neurocast analyze`: evaluate saved checkpoints of a run (roll-outs, figures, tables)."""

from __future__ import annotations

import argparse

from neurocast.cli import emit_path, register
from neurocast.errors import ConfigError

NAMED = ("best", "final", "latest", "best_early_stop")


def _epochs(text: str) -> list[int | str]:
    out: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        out.append(part if part in NAMED else _int(part))
    if not out:
        raise ConfigError("--epochs needs a comma-separated list, e.g. 25,50,75,100")
    return out


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"epoch {text!r} is not a number (or best/final/latest)") from None


def _analyze_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory (or a sweep directory: every run in it)")
    p.add_argument("--epoch", default=None, help="epoch number, or best / final / latest (default: final)")
    p.add_argument("--epochs", default=None, help="several epochs, e.g. 25,50,75,100: also writes a table")
    p.add_argument("--horizon", type=int, default=None, help="roll-out steps (default from the run's config)")
    p.add_argument("--starts", type=int, default=None, help="roll-out start points (default from the config)")
    p.add_argument("--jobs", type=int, default=1, help="sweep folders: trials analysed at once (local)")
    p.add_argument("--executor", choices=["local", "slurm", "lsf"], default=None,
                   help="sweep folders: where the analyses run (default: the sweep's own executor)")
    p.add_argument("--dry-run", action="store_true", help="sweep folders: print the analysis commands only")


@register("analyze", "roll-out analysis of a run's saved epochs; writes analysis/<epoch>/", _analyze_args)
def _cmd_analyze(args: argparse.Namespace) -> int:
    from neurocast.pipelines.analysis import analyze

    if args.epoch is not None and args.epochs is not None:
        raise ConfigError("give --epoch or --epochs, not both")
    if args.horizon is not None and args.horizon < 1:
        raise ConfigError(f"--horizon must be >= 1, got {args.horizon}")
    epochs = _epochs(args.epochs) if args.epochs else ([args.epoch] if args.epoch is not None else None)
    if epochs is not None:
        epochs = [e if e in NAMED else _int(str(e)) for e in epochs]
    from neurocast.sweep import analyze_sweep, is_sweep

    if is_sweep(args.run_dir):
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
        extra = []
        for flag, value in (("--epoch", args.epoch), ("--epochs", args.epochs), ("--horizon", args.horizon),
                            ("--starts", args.starts)):
            if value is not None:
                extra += [flag, str(value)]
        emit_path(analyze_sweep(args.run_dir, extra, args.executor, args.jobs, args.dry_run))
        return 0
    emit_path(analyze(args.run_dir, epochs, args.horizon, args.starts))
    return 0
