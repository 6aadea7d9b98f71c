"""`neurocast analyze RUN_DIR`: the analysis of the run's task (see neurocast.tasks)."""

from __future__ import annotations

from pathlib import Path

from neurocast.errors import RunError
from neurocast.runs import RunDir
from neurocast.tasks import task_spec


def analyze(path: str | Path, epochs, horizon=None, starts=None) -> Path:
    """Analyse the run at ``path`` with its task's analysis; returns the folder written."""
    run = RunDir.open(path)
    task = run.read_config().get("task")
    spec = task_spec(task)
    if spec is None or spec.analyze is None:
        raise RunError(f"{run.path}: no analysis for task {task!r}")
    return spec.get("analyze")(run.path, epochs, horizon, starts)
