"""`neurocast fly ...`: task-train the fly visual system and measure how realistic a network is."""

from __future__ import annotations

import argparse

from neurocast.cli import emit_path, register, with_overrides


def _train_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="fly_task config (e.g. configs/fly_flow_task.yaml); not with --resume")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a run from its latest checkpoint")
    p.add_argument("--run-dir", default=None, help="train into exactly this (new or empty) directory")
    with_overrides(p)


@register("train-task", "train the fly network's parameters to estimate optic flow; prints the run directory",
          _train_task_args, group="fly")
def _cmd_train_task(args: argparse.Namespace) -> int:
    """`neurocast train` restricted to fly_task configs (the same code path, resume included)."""
    from neurocast.cli.train_cmds import train_or_resume

    return train_or_resume(args, only_task="fly_task")


def _diagnose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target",
                   help="a fly simulation config, a simulated dataset folder or a fly train-task run directory")
    p.add_argument("--extent", type=int, default=None,
                   help="diagnose on a network of this extent (default: the target's)")
    p.add_argument("--output", default=None, help="folder for diagnostics.json/.md and the tuning figure")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    with_overrides(p)


@register("diagnose", "realism of a fly network: DSI of T4/T5, forgetting time, variance shares, silent cells",
          _diagnose_args, group="fly")
def _cmd_diagnose(args: argparse.Namespace) -> int:
    import json

    from neurocast.pipelines.fly_diagnose import diagnose_target

    folder, diag = diagnose_target(args.target, args.overrides, extent=args.extent, output=args.output)
    if args.json:
        print(json.dumps(diag["summary"], indent=2))
    else:
        print((folder / "diagnostics.md").read_text())
    emit_path(folder)
    return 0
