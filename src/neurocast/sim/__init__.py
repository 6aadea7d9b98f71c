"""Simulators: the fly visual system (connectome-constrained) and multi-session RNNs."""

from __future__ import annotations

from pathlib import Path

from neurocast.errors import ConfigError


def simulate(cfg, output: str | Path | None = None, verify: str = "changed") -> Path:
    """Run (or reuse) the simulation a config describes; returns the dataset folder.

    One process per dataset folder at a time (others wait, then reuse it). A complete
    folder is reused only once its stores verify (``verify``: ``changed`` checks sizes and
    re-checksums chunks modified since written; ``full`` re-checksums everything, what
    `neurocast simulate` does); stores that do not are simulated again."""
    from neurocast.sim.dataset_folder import dataset_folder, dataset_lock, reuse_or_repair
    from neurocast.tasks import task_spec

    spec = task_spec(getattr(cfg, "task", None))
    if spec is None or spec.simulate is None:
        raise ConfigError(f"task {getattr(cfg, 'task', None)!r} is not a simulation")
    run = spec.get("simulate")
    folder = dataset_folder(cfg, output)
    lock = dataset_lock(folder)
    try:
        if folder.is_dir():
            reuse_or_repair(cfg, folder, verify)
        return run(cfg, output)
    finally:
        lock.release()
