"""`neurocast experiments`, `run`, `sweep`, `summarize`: named presets, grids, tables."""

from __future__ import annotations

import argparse

from neurocast.cli import emit_path, register, with_overrides


def _experiments_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--presets-dir", action="append", default=None, help="also list presets in this folder")


@register("experiments", "list the named experiments (presets) with a one-line description", _experiments_args)
def _cmd_experiments(args: argparse.Namespace) -> int:
    from neurocast.presets_index import presets
    from neurocast.report.tables import format_table

    rows = [[p.name, p.task, p.description] for p in presets(args.presets_dir).values()]
    print(format_table(["name", "task", "description"], rows))
    return 0


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="experiment name (see `neurocast experiments`)")
    p.add_argument("--presets-dir", action="append", default=None, help="also look for presets in this folder")
    p.add_argument("--run-dir", default=None, help="train into exactly this directory")
    with_overrides(p)


@register("run", "run a named experiment (train it, or simulate it for simulation presets)", _run_args)
def _cmd_run(args: argparse.Namespace) -> int:
    from neurocast.cli.train_cmds import exit_status, train_from_config
    from neurocast.presets_index import find
    from neurocast.tasks import load_task_config, task_spec

    cfg = load_task_config(find(args.name, args.presets_dir), args.overrides)
    spec = task_spec(cfg.task)
    if spec.simulate is not None:
        from neurocast.sim import simulate

        emit_path(simulate(cfg, args.run_dir))
        return 0
    if spec.run is not None:
        path, code = spec.get("run")(cfg, args.run_dir)
        emit_path(path)
        return code
    run = train_from_config(cfg, args.run_dir)
    emit_path(run.path)
    return exit_status(run)


def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="an experiment config (with --grid) or a sweep YAML (task: sweep)")
    p.add_argument("--grid", action="append", default=[], help="key=v1,v2 (repeat for a Cartesian product)")
    p.add_argument("--seeds", type=int, default=None, help="trials per grid point (seeds 0..n-1)")
    p.add_argument("--executor", choices=["local", "slurm", "lsf"], default=None)
    p.add_argument("--jobs", type=int, default=None, help="local executor: trials at once (default 1)")
    p.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
    p.add_argument("--runs-dir", default=None, help="where the sweep folder goes (default: runs)")
    p.add_argument("--name", default=None, help="sweep name (default: the config's file name)")
    with_overrides(p)


@register("sweep", "run a grid of trials (local processes, Slurm or LSF); re-running resumes it", _sweep_args)
def _cmd_sweep(args: argparse.Namespace) -> int:
    from neurocast.config import read_yaml
    from neurocast.errors import ConfigError
    from neurocast.presets_index import resolve_config_path
    from neurocast.sweep import load_sweep, run_sweep, sweep_exit_status, sweep_from_cli

    path = resolve_config_path(args.config)
    task = read_yaml(path).get("task")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (trials per grid point), got {args.seeds}")
    if task == "sweep":
        extra = []
        for flag, value in (("--seeds", args.seeds), ("--executor", args.executor), ("--runs-dir", args.runs_dir),
                            ("--name", args.name)):
            if value is not None:
                extra += [flag, str(value)]
        if args.grid:
            raise ConfigError("--grid is for experiment configs; a sweep YAML has its own grid (override --grid.<key>)")
        cfg = load_sweep(path, args.overrides + extra)
    else:
        if not args.grid and not args.seeds:
            raise ConfigError("give at least one --grid key=v1,v2 (or --seeds N), or a sweep YAML")
        cfg = sweep_from_cli(str(path), args.grid, args.seeds or 1, args.overrides, executor=args.executor,
                             runs_dir=args.runs_dir, name=args.name)
    folder, res = run_sweep(cfg, dry_run=args.dry_run, jobs=args.jobs)
    emit_path(folder)
    return sweep_exit_status(res)


def _summarize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a folder holding run directories (a sweep, runs/<experiment>, runs/)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--sort", default=None, help="sort by this column (metric or hyperparameter)")


@register("summarize", "table of all runs below DIR: the hyperparameters that differ and key metrics", _summarize_args)
def _cmd_summarize(args: argparse.Namespace) -> int:
    from neurocast.summarize import summarize

    summarize(args.dir, as_json=args.json, sort=args.sort)
    return 0
