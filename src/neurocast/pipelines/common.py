"""Helpers shared by pipelines: the datasets a config points to."""

from __future__ import annotations

from pathlib import Path

from neurocast.errors import DataError


def dataset_from_config(simulation: str | None, path: str | None) -> Path:
    """The dataset folder (or file) a data section points to, simulating it if needed."""
    if simulation is not None:
        from neurocast.presets_index import resolve_config_path
        from neurocast.sim import simulate
        from neurocast.tasks import load_task_config

        sim_cfg = load_task_config(resolve_config_path(simulation))
        return simulate(sim_cfg)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data.path {p} does not exist")
    return p


def recordings_by_session(folder: Path, **options):
    from neurocast.data import load_recordings

    return {r.session: r for r in load_recordings(folder, **options)}


def fit_tracked(trainer, tracker, run, *, main: bool = True, close=()) -> dict:
    """``trainer.fit()`` with the run marked failed on an exception and SIGTERM / SIGINT asking the
    trainer to stop after its checkpoint; the tracker (and the ``close`` callables) closed however
    it ends. Returns the trainer's summary."""
    from neurocast.train.loop import graceful_stop

    try:
        with run.status_on_error(enabled=main), graceful_stop(trainer):
            return trainer.fit()
    finally:
        tracker.close()
        for c in close:
            c()
