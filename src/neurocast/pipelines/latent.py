"""Latent-dynamics pipeline: `neurocast train` for task: latent, and `--resume`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from neurocast.checkpoints import resume_checkpoint, seed_everything
from neurocast.config import to_yaml
from neurocast.data.recording import Recording
from neurocast.devices import select_device, setup_torch
from neurocast.errors import ConfigError, DataError
from neurocast.pipelines.common import dataset_from_config, fit_tracked, recordings_by_session
from neurocast.progress import info
from neurocast.runs import RunDir
from neurocast.schema.latent import LatentExperiment
from neurocast.train.latent_task import LatentTask
from neurocast.train.loop import Trainer, build_optimizer
from neurocast.train.tracking import Tracker


def load_data(cfg: LatentExperiment) -> tuple[Path, Recording, list[tuple[str, Recording, int, int]]]:
    """(dataset path, training recording, cross-validation sets) for a latent config."""
    folder = dataset_from_config(cfg.data.simulation, cfg.data.path)
    recs = recordings_by_session(folder)
    name = cfg.data.train_recording
    if name not in recs:
        if len(recs) == 1:
            train = next(iter(recs.values()))
        else:
            raise DataError(f"data.train_recording={name!r} is not in {folder} (recordings: {', '.join(sorted(recs))})")
    else:
        train = recs[name]
    cvs = []
    for cv in cfg.data.cross_validation:
        if cv.recording in recs:
            rec = recs[cv.recording]
        else:
            p = Path(cv.recording).expanduser()
            if not p.exists():
                raise DataError(
                    f"cross-validation recording {cv.recording!r} is neither in {folder} ({', '.join(sorted(recs))}) "
                    "nor a path"
                )
            (rec,) = recordings_by_session(p).values()
        end = cv.end if cv.end is not None else rec.T
        if not 0 <= cv.start < end <= rec.T:
            raise ConfigError(f"cross-validation {cv.recording!r}: range [{cv.start}, {end}) is outside its {rec.T} "
                              "frames")
        cvs.append((cv.name or cv.recording, rec, cv.start, end))
    return folder, train, cvs


def ensure_run_data(cfg: LatentExperiment, run: RunDir) -> None:
    """Regenerate a run's simulated dataset from its saved simulation.yaml if it was deleted."""
    if cfg.data.path is None or Path(cfg.data.path).exists():
        return
    saved = run.path / "simulation.yaml"
    if not saved.is_file():
        raise DataError(f"the run's dataset {cfg.data.path} no longer exists and the run has no simulation.yaml to "
                        "rebuild it")
    from neurocast.sim import simulate
    from neurocast.tasks import load_task_config

    info(f"dataset {cfg.data.path} is missing: simulating it again from {saved}")
    simulate(load_task_config(saved), cfg.data.path)


def build(cfg: LatentExperiment, device: torch.device, fitted: dict[str, Any] | None = None):
    """(dataset folder, LatentTask) of a latent config on ``device``; ``fitted``: a checkpoint's task state,
    whose normalisation is reused instead of refitted."""
    folder, train, cvs = load_data(cfg)
    seed_everything(cfg.training.seed)
    task = LatentTask(cfg, train, cvs, device, fitted=fitted)
    return folder, task


def _optimizer(cfg: LatentExperiment, task: LatentTask):
    tr = cfg.training
    return build_optimizer(tr.optimizer, task.model.parameters(), tr.learning_rate, tr.optimizer_kwargs)


def train_latent(cfg: LatentExperiment, run_path: str | Path | None = None) -> RunDir:
    """Train from scratch into a new run directory (or exactly ``run_path`` for sweeps)."""
    from neurocast import distributed

    tr = cfg.training
    dist = distributed.setup()
    device = select_device(distributed.device_for(tr.device))
    setup_torch(device, tf32=tr.use_tf32_matmul, threads=tr.num_threads)
    folder, task = build(cfg, device)
    if not dist.is_main:  # only rank 0 writes; the others train on their share of each batch
        run = RunDir(distributed.broadcast(None))
        return _fit(cfg, task, run, resume_from=None)
    # the run's config points at the exact dataset it used (a simulation config file may
    # change later); the simulation config is kept beside it to regenerate the data
    resolved = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(folder.resolve()),
                                                                          "simulation": None})})
    yaml_text = to_yaml(resolved)
    extra = {"dataset": str(folder.resolve()), "data_simulation_config": cfg.data.simulation, "task": "latent"}
    run = RunDir.new(run_path, cfg, yaml_text, seed=tr.seed, extra_env=extra)
    sim_yaml = folder / "simulation.yaml"
    if sim_yaml.is_file():
        (run.path / "simulation.yaml").write_text(sim_yaml.read_text())
    distributed.broadcast(run.path)
    info(f"run directory: {run.path}")
    try:
        return _fit(cfg, task, run, resume_from=None)
    finally:
        run.release()


def resume_latent(run_path: str | Path) -> RunDir:
    """Continue a killed (or finished-early) run from its latest checkpoint."""
    with RunDir.resuming(run_path) as (run, cfg):
        latest, state = resume_checkpoint(run.checkpoints)
        ensure_run_data(cfg, run)
        tr = cfg.training
        device = select_device(tr.device)
        setup_torch(device, tf32=tr.use_tf32_matmul, threads=tr.num_threads)
        _, task = build(cfg, device, fitted=state["task"])
        info(f"resuming {run.path} after epoch {state['epoch']} ({latest.name})")
        return _fit(cfg, task, run, resume_from=(latest, state))


def _fit(cfg: LatentExperiment, task: LatentTask, run: RunDir, resume_from: tuple[Path, dict] | None) -> RunDir:
    from neurocast import distributed

    tr = cfg.training
    model = task.model
    main = distributed.info().is_main
    if tr.compile:
        task.model = torch.compile(model)
    tracker = Tracker(run, cfg.logging, cfg.model_dump(mode="json"), enabled=main)
    trainer = Trainer(
        task,
        _optimizer(cfg, task),
        run=run,
        tracker=tracker,
        config=cfg.model_dump(mode="json"),
        epochs=task.total_epochs,
        grad_clip=tr.grad_clip_max_norm,
        checkpoint_every=tr.save_checkpoint_every_n_epochs,
        epoch_label=task.epoch_label,
    )
    if resume_from is not None:
        trainer.resume(*resume_from)
    summary = fit_tracked(trainer, tracker, run, main=main, close=(task.close,))
    if main:
        run.write_summary(latent_summary(cfg, trainer, summary))
        run.set_status("terminated" if trainer.stop_requested else "complete")
    return run


def latent_summary(cfg: LatentExperiment, trainer: Trainer, summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json: losses, checkpoints and the per-multiple comparison with baselines."""
    best = next((h for h in trainer.history if h["epoch"] == trainer.best_epoch), None)
    final = trainer.history[-1] if trainer.history else None
    def table(rec, prefix="val"):
        if rec is None:
            return None
        rows = []
        for s in cfg.training.loss_multiples:
            rows.append({
                "step": s,
                "model": rec.get(f"{prefix}/mse_at_{s}"),
                "mean_baseline": rec.get(f"{prefix}/mean_baseline_at_{s}"),
                "copy_baseline": rec.get(f"{prefix}/copy_baseline_at_{s}"),
                "stimulus_baseline": rec.get(f"{prefix}/stimulus_baseline_at_{s}"),
                "lds_baseline": rec.get(f"{prefix}/lds_baseline_at_{s}"),
            })
        return rows

    best_rows = table(best)
    return {
        "task": "latent",
        "experiment": cfg.name,
        **summary,
        "val_at_multiples_best": best_rows,
        "val_at_multiples_final": table(final),
        "beats_mean_baseline_at_every_multiple": None if not best_rows else all(
            r["model"] is not None and r["mean_baseline"] is not None and r["model"] < r["mean_baseline"]
            for r in best_rows
        ),
        "beats_linear_baselines_at_every_multiple": (
            None if not best_rows or best_rows[0]["stimulus_baseline"] is None else
            all(r["model"] is not None and r["model"] < min(r["stimulus_baseline"], r["lds_baseline"])
                for r in best_rows)
        ),
        "final_train_loss": None if final is None else final.get("train/total"),
    }
