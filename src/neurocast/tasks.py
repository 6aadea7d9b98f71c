"""The task registry: one :class:`TaskSpec` per task, the only place that knows what a task is.

A config's ``task`` key names its task; the spec says which schema validates it and which
functions train, resume, analyse or simulate it, which key a sweep sets per seed and which
metrics ``neurocast summarize`` shows. The command line, sweeps, summaries and analyses
look tasks up here instead of testing task names.

Entries are ``"module:attribute"`` strings, imported on first use: the registry sits at the
bottom of the house (it imports nothing but the config machinery), ``neurocast config show``
stays fast, and the functions it names may live in any layer. Adding a task means adding
one spec to :data:`TASKS` (see docs/architecture.md, "Adding a task").
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from neurocast.config import apply_overrides, closest, norm_key, parse_override_tokens, read_yaml, validate
from neurocast.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    """One task. Every callable is a ``"module:attribute"`` string (None: the task has no such step).

    * ``schema``: the root config class (pydantic) of the task's YAML;
    * ``train(cfg, run_path=None) -> RunDir``: ``neurocast train`` / ``run`` and sweep trials
      (``run_path``: exactly this new directory, else a new one under ``runs_dir/name``);
    * ``resume(run_path) -> RunDir``: ``neurocast train --resume`` (and sweeps re-running a trial);
    * ``analyze(run_path, epochs, horizon, starts) -> Path``: ``neurocast analyze``;
    * ``simulate(cfg, output=None) -> Path``: ``neurocast simulate`` / ``run``, and the data
      sections that name a simulation config (the dataset folder);
    * ``run(cfg, run_path=None) -> (path, exit status)``: what ``neurocast run`` does for a task
      that is neither trained nor simulated (a sweep);
    * ``seed_key``: the config key a sweep sets per seed (None: the task cannot be swept);
    * ``summary_row(run_path, summary) -> dict``: the key metrics ``neurocast summarize`` shows.
    """

    name: str
    schema: str
    train: str | None = None
    resume: str | None = None
    analyze: str | None = None
    simulate: str | None = None
    run: str | None = None
    seed_key: str | None = None
    summary_row: str | None = None

    def get(self, what: str) -> Any:
        """The object an entry names (imported now), e.g. ``spec.get("train")(cfg)``."""
        target = getattr(self, what)
        if target is None:
            raise ConfigError(f"task {self.name!r} has no {what} step")
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


_FORECAST = "neurocast.pipelines.forecast"
TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("fly_simulation", "neurocast.schema.simulation:FlySimulationConfig",
             simulate="neurocast.sim.fly_simulation:simulate_fly"),
    # the fly network's own parameters, trained on optic flow (`neurocast train` or `neurocast fly train-task`)
    TaskSpec("fly_task", "neurocast.schema.fly_task:FlyTaskConfig",
             train="neurocast.pipelines.fly_task:train_fly_task", resume="neurocast.pipelines.fly_task:resume_fly_task",
             seed_key="training.seed"),
    TaskSpec("latent", "neurocast.schema.latent:LatentExperiment",
             train="neurocast.pipelines.latent:train_latent", resume="neurocast.pipelines.latent:resume_latent",
             analyze="neurocast.pipelines.latent_analysis:analyze_command", seed_key="training.seed",
             summary_row="neurocast.summarize:latent_row"),
    TaskSpec("forecast", "neurocast.schema.forecast:ForecastExperiment",
             train=f"{_FORECAST}:train_forecast", resume=f"{_FORECAST}:resume_forecast",
             analyze=f"{_FORECAST}:analyze_forecast_run", seed_key="training.seeds",
             summary_row="neurocast.summarize:forecast_row"),
    TaskSpec("forecast_compare", "neurocast.schema.forecast:ForecastCompare",
             train=f"{_FORECAST}:train_forecast", resume=f"{_FORECAST}:resume_forecast",
             analyze=f"{_FORECAST}:analyze_forecast_run", seed_key="training.seeds",
             summary_row="neurocast.summarize:forecast_row"),
    TaskSpec("rnn_simulation", "neurocast.schema.rnn_simulation:RNNSimulationConfig",
             simulate="neurocast.sim.rnn_sessions:simulate_rnn"),
    TaskSpec("ttt_compare", "neurocast.schema.forecast:TTTCompare",
             train="neurocast.pipelines.ttt_compare:train_ttt_compare",
             resume="neurocast.pipelines.ttt_compare:resume_ttt_compare", seed_key="training.seeds",
             summary_row="neurocast.summarize:ttt_compare_row"),
    TaskSpec("sweep", "neurocast.schema.sweep:SweepConfig", run="neurocast.sweep:run_named_sweep"),
)}


def task_spec(task: str | None) -> TaskSpec | None:
    """The spec of a task, None for a task that does not exist."""
    return TASKS.get(task) if isinstance(task, str) else None


def task_schema(task: str) -> type[BaseModel]:
    """The root config class of a task (a one-line error naming the closest task when there is none)."""
    spec = task_spec(task)
    if spec is None:
        raise ConfigError(f"unknown task {task!r}{closest(str(task), sorted(TASKS))}")
    return spec.get("schema")


def _task_of(data: Mapping[str, Any], overrides: Sequence[str], origin: str) -> str:
    task = data.get("task")
    for key, values, _ in parse_override_tokens(overrides):
        if norm_key(key) == "task" and values:
            task = values[-1]
    if task is None:
        raise ConfigError(f"{origin}: required key 'task' is missing (one of {', '.join(sorted(TASKS))})")
    return str(task)


def load_task_config(source: str | os.PathLike | Mapping[str, Any], overrides: Sequence[str] = ()) -> BaseModel:
    """Any task's config, validated: read ``source`` (a YAML file, following ``base:``, or a mapping),
    apply ``overrides`` (``["--training.epochs", "5", ...]``); the ``task`` key picks the schema.

    Bad input is a one-line :class:`~neurocast.errors.ConfigError` naming the file and the key."""
    if isinstance(source, Mapping):
        data, origin = dict(source), "config"
    else:
        data, origin = read_yaml(source), f"config {source}"
    schema = task_schema(_task_of(data, overrides, origin))
    return validate(schema, apply_overrides(data, overrides, schema), origin)
