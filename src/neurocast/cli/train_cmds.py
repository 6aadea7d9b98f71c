"""`neurocast train`: train a model from a config, or resume a killed run."""

from __future__ import annotations

import argparse

from neurocast.cli import emit_path, register, with_overrides
from neurocast.errors import ConfigError


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="experiment config (YAML); not with --resume")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a run from its latest checkpoint")
    p.add_argument("--run-dir", default=None, help="train into exactly this (new or empty) directory (sweeps use it)")
    with_overrides(p)


def train_from_config(cfg, run_path=None):
    """Train a validated experiment config with its task's pipeline; returns the run directory."""
    from neurocast.tasks import task_spec

    spec = task_spec(getattr(cfg, "task", None))
    if spec is None or spec.train is None:
        raise ConfigError(f"task {getattr(cfg, 'task', None)!r} cannot be trained (use `neurocast simulate` for "
                          "simulations)")
    return spec.get("train")(cfg, run_path)


def resume_run(path):
    """Continue the run at ``path`` with its task's pipeline; returns the run directory."""
    from neurocast.runs import RunDir
    from neurocast.tasks import task_spec

    run = RunDir.open(path)
    task = run.read_config().get("task")
    spec = task_spec(task)
    if spec is None or spec.resume is None:
        raise ConfigError(f"{run.path}: task {task!r} cannot be resumed")
    return spec.get("resume")(run.path)


def exit_status(run) -> int:
    """0 for a finished run; 128 + the signal number (143 for SIGTERM) for a run that a
    SIGTERM/SIGUSR2 stopped early, so `neurocast train ... && next-step` stops there too."""
    import signal

    from neurocast.runs import RunDir
    from neurocast.train.loop import stop_signal

    if RunDir(run.path).status == "terminated":
        return 128 + int(stop_signal() or signal.SIGTERM)
    return 0


@register("train", "train a model (latent dynamics or multi-session forecasting); prints the run directory",
          _train_args)
def _cmd_train(args: argparse.Namespace) -> int:
    return train_or_resume(args)


def train_or_resume(args: argparse.Namespace, only_task: str | None = None) -> int:
    """`train CONFIG` or `train --resume RUN_DIR`; ``only_task`` refuses configs and runs of any
    other task (`fly train-task`)."""
    from neurocast.presets_index import resolve_config_path
    from neurocast.tasks import load_task_config

    def check(task, what):
        if only_task is not None and task != only_task:
            raise ConfigError(f"{what}: task {task!r} is not {only_task} (use `neurocast train` for it)")

    if args.resume:
        if args.config or args.overrides:
            raise ConfigError("--resume RUN_DIR takes no config or overrides (the run's own config.yaml is used)")
        if only_task is not None:
            from neurocast.runs import RunDir

            check(RunDir.open(args.resume).read_config().get("task"), args.resume)
        run = resume_run(args.resume)
        emit_path(run.path)
        return exit_status(run)
    if not args.config:
        raise ConfigError(f"give a {only_task or 'config'} file (or --resume RUN_DIR)")
    cfg = load_task_config(resolve_config_path(args.config), args.overrides)
    check(getattr(cfg, "task", None), args.config)
    run = train_from_config(cfg, args.run_dir)
    emit_path(run.path)
    return exit_status(run)
