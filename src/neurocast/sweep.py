"""Sweeps: one run directory per trial, run locally or on a cluster, re-runnable.

``<runs_dir>/sweeps/<name>-<hash>/`` (the hash covers the experiment, overrides, grid and
seeds, so re-running the same sweep finds the same folder)::

    sweep.json        the definition and every trial (name, overrides, grid values, seed)
    experiment.yaml   the experiment config as it was when the sweep started
    trials/<trial>/   one complete run directory per trial
    logs/             one log per trial (local), scheduler logs (clusters)

Re-running a sweep skips complete trials, leaves alone trials that another live process
is still writing (their run lock is held: reported as running), resumes every other
trial that has a readable checkpoint (latent, forecasting and comparison trials alike;
``train --resume`` picks the newest checkpoint that loads) and starts trials that never
checkpointed again from scratch (the earlier attempt is kept as ``<trial>.failed-<k>``;
nothing is deleted). Every attempt's log is kept (``logs/<trial>.log`` is the newest).
One sweep driver at a time: a second one fails naming the first.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from neurocast.checkpoints import checkpoint_readable
from neurocast.config import read_yaml
from neurocast.errors import ConfigError, NeurocastError, RunError
from neurocast.executors import neurocast_argv, run_local, submit_lsf, submit_slurm
from neurocast.locks import FileLock, describe
from neurocast.presets_index import resolve_config_path
from neurocast.progress import info, warn
from neurocast.report.tables import format_table
from neurocast.runs import RunDir, write_json
from neurocast.schema.sweep import SweepConfig
from neurocast.tasks import load_task_config, task_spec


@dataclass
class Trial:
    index: int
    name: str
    overrides: list[str]
    params: dict[str, Any]
    seed: int | None


def _value_token(v: Any) -> str:
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    if v is None:
        return "null"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _slug(v: Any) -> str:
    s = _value_token(v)
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in s)[:24]


def expand(cfg: SweepConfig, task: str) -> list[Trial]:
    """The trials of a sweep over an experiment of ``task``: every grid point, ``cfg.seeds`` times."""
    spec = task_spec(task)
    if spec is None or spec.seed_key is None:
        raise ConfigError(f"sweeps run trainable experiments (latent, forecast, ...); {cfg.experiment} has task "
                          f"{task!r}")
    seed_key = spec.seed_key
    keys = list(cfg.grid)
    trials = []
    combos = list(itertools.product(*(cfg.grid[k] for k in keys))) or [()]
    for combo in combos:
        for seed in range(cfg.seeds):
            params = dict(zip(keys, combo))
            over = []
            for k, v in params.items():
                over += [f"--{k}", _value_token(v)]
            if cfg.seeds > 1:
                over += [f"--{seed_key}", f"[{seed}]" if seed_key.endswith("seeds") else str(seed)]
            parts = [f"{k.split('.')[-1]}={_slug(v)}" for k, v in params.items()]
            if cfg.seeds > 1:
                parts.append(f"seed={seed}")
            i = len(trials)
            trials.append(Trial(i, f"t{i:03d}_" + ("_".join(parts) or "base"), over, params,
                                seed if cfg.seeds > 1 else None))
    return trials


def sweep_folder(cfg: SweepConfig, experiment_data: dict) -> Path:
    ident = json.dumps({"experiment": experiment_data, "overrides": cfg.overrides, "grid": cfg.grid,
                        "seeds": cfg.seeds}, sort_keys=True, default=str)
    return Path(cfg.runs_dir).expanduser() / "sweeps" / f"{cfg.name}-{hashlib.sha256(ident.encode()).hexdigest()[:8]}"


def load_sweep(path: str | os.PathLike, overrides: list[str]) -> SweepConfig:
    """A sweep YAML (a file or a preset name) with ``overrides`` applied, validated."""
    return load_task_config(resolve_config_path(path), overrides)


def sweep_from_cli(experiment: str, grid: list[str], seeds: int, overrides: list[str], **fields) -> SweepConfig:
    """A sweep defined on the command line: --grid key=v1,v2 (values parsed like overrides)."""
    from neurocast.config import parse_scalar

    parsed: dict[str, list[Any]] = {}
    for g in grid:
        key, eq, values = g.partition("=")
        if not eq or not key or not values:
            raise ConfigError(f"--grid {g!r}: write --grid section.key=value1,value2")
        key = key.lstrip("-").replace("-", "_")
        parsed[key] = [parse_scalar(v) for v in values.split(",")]
    fields = {k: v for k, v in fields.items() if v is not None}
    fields.setdefault("name", Path(experiment).stem)
    return SweepConfig(experiment=experiment, overrides=overrides, grid=parsed, seeds=seeds, **fields)


def prepare(cfg: SweepConfig) -> tuple[Path, list[Trial], Path]:
    """Validate every trial's config and create the sweep folder (or reuse it)."""
    exp_path = resolve_config_path(cfg.experiment)
    data = read_yaml(exp_path)
    folder = sweep_folder(cfg, data)
    trials = expand(cfg, str(data.get("task")))
    for t in trials:  # every trial's config must be valid before anything runs
        try:
            load_task_config(data, cfg.overrides + t.overrides)
        except ConfigError as exc:
            raise ConfigError(f"sweep trial {t.name}: {exc}") from None
    folder.mkdir(parents=True, exist_ok=True)
    exp_copy = folder / "experiment.yaml"
    if not exp_copy.exists():
        exp_copy.write_text(yaml.safe_dump(data, sort_keys=False))
    write_json(folder / "sweep.json", {"sweep": cfg.model_dump(mode="json"), "trials": [asdict(t) for t in trials]})
    return folder, trials, exp_copy


def trial_status(path: Path) -> str:
    if not path.exists():
        return "new"
    st = path / "status"
    return st.read_text().strip() if st.exists() else "empty"


def has_checkpoint(path: Path) -> bool:
    """A trial (of any task: checkpoints of seeds and methods are nested) wrote a readable checkpoint."""
    return any(checkpoint_readable(p) for p in path.rglob("checkpoints/*.pt"))


def plan(folder: Path, trials: list[Trial], exp_copy: Path, cfg: SweepConfig) -> list[tuple[Trial, str, list[str]]]:
    """(trial, action, command) for every trial not yet complete; action is run (new),
    resume (has a checkpoint), retry (never checkpointed) or running (another live process
    writes it: nothing to do, command empty)."""
    out = []
    for t in trials:
        path = folder / "trials" / t.name
        status = trial_status(path)
        if status == "complete":
            continue
        if status != "new" and RunDir(path).holder() is not None:
            out.append((t, "running", []))
            continue
        if status not in ("new", "empty") and (path / "config.yaml").is_file() and has_checkpoint(path):
            out.append((t, "resume", neurocast_argv("train", "--resume", path)))
            continue
        action = "run" if status == "new" else "retry"
        out.append((t, action, neurocast_argv("train", exp_copy, *cfg.overrides, *t.overrides, "--run-dir", path)))
    return out


def set_aside(path: Path) -> None:
    """Keep a failed attempt beside the trial (never delete results)."""
    if path.exists() and RunDir(path).holder() is not None:  # a live process took it meanwhile
        raise RunError(f"sweep trial {path} is in use by {describe(RunDir(path).holder())}; not restarting it")
    if not path.exists() or not any(path.iterdir()):
        if path.exists():
            path.rmdir()
        return
    k = 1
    while path.with_name(f"{path.name}.failed-{k}").exists():
        k += 1
    path.rename(path.with_name(f"{path.name}.failed-{k}"))


def run_sweep(cfg: SweepConfig, dry_run: bool = False, jobs: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Run (or resume) every trial of a sweep; returns (sweep folder, {"trials", "failed", "running"} or, with
    ``dry_run``, {"trials", "to_run"}). ``jobs``: trials at once on the local executor (default: the config's)."""
    folder, trials, exp_copy = prepare(cfg)
    driver = None
    if not dry_run:  # one driver per sweep (a second one would start the same trials)
        driver = FileLock(folder / ".lock", f"sweep {folder}").acquire()
    try:
        return _run(cfg, folder, trials, exp_copy, dry_run, jobs)
    finally:
        if driver is not None:
            driver.release()


def sweep_exit_status(result: dict[str, Any]) -> int:
    """1 when a trial failed, was stopped or is still running elsewhere, else 0."""
    return 1 if result.get("failed") or result.get("running") else 0


def run_named_sweep(cfg: SweepConfig, run_path=None) -> tuple[Path, int]:
    """`neurocast run NAME` of a sweep preset: (sweep folder, exit status)."""
    folder, res = run_sweep(cfg)
    return folder, sweep_exit_status(res)


def _run(cfg, folder, trials, exp_copy, dry_run, jobs) -> tuple[Path, dict[str, Any]]:
    todo = plan(folder, trials, exp_copy, cfg)
    busy = [t for t, action, _ in todo if action == "running"]
    todo = [x for x in todo if x[1] != "running"]
    done = len(trials) - len(todo) - len(busy)
    info(f"sweep {folder}: {len(trials)} trials, {done} complete, {len(busy)} running elsewhere, {len(todo)} to run")
    if dry_run:
        rows = [[t.name, action, shlex.join(cmd[2:])] for t, action, cmd in todo]
        rows += [[t.name, "running", describe(RunDir(folder / "trials" / t.name).holder())] for t in busy]
        print(format_table(["trial", "action", "command"], rows) if rows else "nothing to run: every trial is complete")
        if cfg.executor != "local" and todo:
            print(_cluster(cfg, folder, [c for _, _, c in todo], dry_run=True))
        return folder, {"trials": len(trials), "to_run": len(todo)}
    for t, action, _ in todo:
        if action == "retry":
            set_aside(folder / "trials" / t.name)
    (folder / "trials").mkdir(exist_ok=True)
    if cfg.executor == "local":
        codes = run_local([c for _, _, c in todo], [t.name for t, _, _ in todo], folder / "logs",
                          jobs or cfg.local.jobs)
    else:
        print(_cluster(cfg, folder, [c for _, _, c in todo], dry_run=False))
        codes = {}
    rows = []
    failed, stopped, running = [], [], []
    for t in trials:
        run = RunDir(folder / "trials" / t.name)
        status = run.live_status if run.path.exists() else "new"
        holder = run.holder() if run.path.exists() else None
        if holder is not None:
            status = f"running ({describe(holder)})"
            running.append(t.name)
        elif t.name in codes and codes[t.name] != 0:
            if status == "terminated":
                stopped.append(t.name)
            else:
                status = "failed" if status in ("running", "interrupted", "new", None) else status
                failed.append(t.name)
        rows.append([t.name, " ".join(f"{k}={v}" for k, v in t.params.items()) or "-",
                     "-" if t.seed is None else str(t.seed), status or "empty"])
    print(format_table(["trial", "values", "seed", "status"], rows))
    if failed:
        warn(f"{len(failed)} trial(s) failed: {', '.join(failed)} (logs in {folder / 'logs'}; re-run the sweep to "
             "retry)")
    if stopped:
        warn(f"{len(stopped)} trial(s) stopped by a signal before finishing: {', '.join(stopped)} "
             "(re-run the sweep to resume them)")
    if running:
        warn(f"{len(running)} trial(s) still running in another process: {', '.join(running)} "
             "(left alone; re-run the sweep when they have finished)")
    return folder, {"trials": len(trials), "failed": failed + stopped, "running": running}


def _cluster(cfg: SweepConfig, folder: Path, commands: list[list[str]], dry_run: bool) -> str:
    if cfg.executor == "slurm":
        return submit_slurm(commands, cfg.name, folder / "logs", cfg.slurm, dry_run)
    if cfg.executor == "lsf":
        return submit_lsf(commands, cfg.name, folder, cfg.lsf, dry_run)
    raise ConfigError(f"unknown executor {cfg.executor!r}")


def is_sweep(path: str | os.PathLike) -> bool:
    return (Path(path) / "sweep.json").is_file()


def analyze_sweep(path: str | os.PathLike, extra_args: list[str], executor: str | None = None,
                  jobs: int = 1, dry_run: bool = False) -> Path:
    """Fan `neurocast analyze` out over every complete trial of a sweep."""
    folder = Path(path)
    spec = json.loads((folder / "sweep.json").read_text())
    cfg = SweepConfig.model_validate(spec["sweep"])
    if executor is not None:
        cfg = cfg.model_copy(update={"executor": executor})
    names, commands = [], []
    for t in spec["trials"]:
        p = folder / "trials" / t["name"]
        if trial_status(p) == "complete":
            names.append(f"analyze_{t['name']}")
            commands.append(neurocast_argv("analyze", p, *extra_args))
    if not commands:
        raise RunError(f"{folder}: no complete trial to analyse")
    if dry_run:
        print(format_table(["job", "command"], [[n, shlex.join(c[2:])] for n, c in zip(names, commands)]))
        if cfg.executor != "local":
            print(_cluster(cfg, folder / "analysis", commands, dry_run=True))
        return folder
    if cfg.executor == "local":
        codes = run_local(commands, names, folder / "logs", jobs)
        bad = [n for n, c in codes.items() if c]
        if bad:
            raise NeurocastError(f"analysis failed for {', '.join(bad)} (logs in {folder / 'logs'})")
    else:
        (folder / "analysis").mkdir(exist_ok=True)
        print(_cluster(cfg, folder / "analysis", commands, dry_run=False))
    return folder
