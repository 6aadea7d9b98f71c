"""Dispatch `neurocast analyze` by the run's task."""

from __future__ import annotations

from pathlib import Path


from neurocast.errors import RunError
from neurocast.runs import RunDir


def analyze(path: str | Path, epochs, horizon=None, starts=None) -> Path:
    run = RunDir.open(path)
    task = run.read_config().get("task")
    if task == "latent":
        from neurocast.pipelines.latent_analysis import analyze_run, print_metrics

        folder, results = analyze_run(run.path, epochs, horizon, starts)
        if len(results) == 1:
            print_metrics(results[0])
        return folder
    if task in ("forecast", "forecast_compare"):
        from neurocast.pipelines.forecast import analyze_forecast_run

        return analyze_forecast_run(run.path, epochs)
    raise RunError(f"{run.path}: no analysis for task {task!r}")
