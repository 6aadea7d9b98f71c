"""`neurocast fly train-task`: task-train the fly visual system's parameters on optic flow, and resume.

The run directory is like every other (config, metrics, checkpoints, status, summary); at
the end ``parameters.json`` holds the best validation checkpoint's per-type and per-pair
values in the parameter-file format (no synapse counts: they are the connectome's, so the
file applies at any extent): simulate it with ``network.parameters_file: RUN/parameters.json``.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import torch

from neurocast.checkpoints import load_checkpoint, load_model_state, resume_checkpoint, seed_everything
from neurocast.devices import select_device, setup_torch
from neurocast.pipelines.common import fit_tracked
from neurocast.progress import info
from neurocast.runs import RunDir
from neurocast.schema.fly_task import FlyTaskConfig
from neurocast.sim.fly_network import build_network
from neurocast.train.fly_flow_task import FlyFlowTask
from neurocast.train.loop import Trainer
from neurocast.train.tracking import Tracker

PARAMETERS = "parameters.json"


def build(cfg: FlyTaskConfig, device: torch.device) -> FlyFlowTask:
    """The fly flow task of a config: the network at its extent, its initial parameters, seeded."""
    from neurocast.sim.fly_simulation import network_parameters

    n = cfg.network
    net = build_network(n.extent, n.connectome_file, n.n_syn_fill)
    init, _ = network_parameters(net, n)
    seed_everything(cfg.training.seed)
    return FlyFlowTask(cfg, net, init, device)


def _optimizer(cfg: FlyTaskConfig, task: FlyFlowTask) -> torch.optim.Optimizer:
    tr = cfg.training
    net = task.model.network
    groups = [
        {"params": [net.log_time_const, net.log_strength], "lr": tr.lr_network},
        {"params": [net.bias], "lr": tr.lr_bias},
    ]
    decoder = list(task.model.decoder.parameters())
    if decoder:
        groups.append({"params": decoder, "lr": tr.lr_decoder})
    return torch.optim.Adam(groups)


def train_fly_task(cfg: FlyTaskConfig, run_path: str | Path | None = None) -> RunDir:
    """Task-train the fly network (``neurocast fly train-task``) into a new run directory (exactly
    ``run_path`` when given); writes ``parameters.json`` at the end. Returns the run."""
    tr = cfg.training
    device = select_device(tr.device)
    setup_torch(device, threads=tr.num_threads)
    task = build(cfg, device)
    run = RunDir.new(run_path, cfg, seed=tr.seed, extra_env={"task": "fly_task"})
    info(f"run directory: {run.path}")
    try:
        return _fit(cfg, task, run, resume_from=None)
    finally:
        run.release()


def resume_fly_task(run_path: str | Path) -> RunDir:
    """Continue a fly train-task run from its newest usable checkpoint; returns the run."""
    with RunDir.resuming(run_path) as (run, cfg):
        latest, state = resume_checkpoint(run.checkpoints)
        device = select_device(cfg.training.device)
        setup_torch(device, threads=cfg.training.num_threads)
        task = build(cfg, device)
        info(f"resuming {run.path} after epoch {state['epoch']} ({latest.name})")
        return _fit(cfg, task, run, resume_from=(latest, state))


def _fit(cfg: FlyTaskConfig, task: FlyFlowTask, run: RunDir, resume_from: tuple[Path, dict] | None) -> RunDir:
    tr = cfg.training
    tracker = Tracker(run, cfg.logging, cfg.model_dump(mode="json"))
    trainer = Trainer(
        task,
        _optimizer(cfg, task),
        run=run,
        tracker=tracker,
        config=cfg.model_dump(mode="json"),
        epochs=tr.epochs,
        grad_clip=tr.grad_clip_max_norm,
        checkpoint_every=tr.save_checkpoint_every_n_epochs,
    )
    if resume_from is not None:
        trainer.resume(*resume_from)
    summary = fit_tracked(trainer, tracker, run)
    export = export_parameters(cfg, task, run, trainer)
    run.write_summary(_summary(cfg, trainer, summary, export))
    run.set_status("terminated" if trainer.stop_requested else "complete")
    return run


def export_parameters(cfg: FlyTaskConfig, task: FlyFlowTask, run: RunDir, trainer: Trainer) -> Path:
    """Write the best checkpoint's parameters (extent-independent) to ``RUN/parameters.json``."""
    from neurocast.sim.fly_params import save_parameters

    src = run.best_checkpoint("latest.pt")
    state = load_checkpoint(src)
    load_model_state(task.model, state["model"], str(src))
    rec = next((h for h in trainer.history if h["epoch"] == state["epoch"]), {})
    prov = {
        "name": f"{cfg.name} ({run.path.name})",
        "trained_by": "neurocast fly train-task",
        "checkpoint": src.name,
        "epoch": int(state["epoch"]),
        "steps": int(state["step"]),
        "extent": cfg.network.extent,
        "initialisation": cfg.network.parameters if isinstance(cfg.network.parameters, str) else "flyvis",
        "decoder": cfg.decoder.kind,
        "val_unexplained_flow_variance": rec.get("val/loss"),
        "val_flow_epe": rec.get("val/flow_epe"),
        "val_zero_flow_epe": rec.get("val/zero_flow_epe"),
        "val_median_dsi_t4": rec.get("val/median_dsi_t4"),
        "val_median_dsi_t5": rec.get("val/median_dsi_t5"),
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    path = run.path / PARAMETERS
    save_parameters(path, task.net, task.current_parameters(), syn_count=False, provenance=prov)
    info(f"trained parameters: {path}")
    return path


def _summary(cfg: FlyTaskConfig, trainer: Trainer, summary: dict[str, Any], export: Path) -> dict[str, Any]:
    best = next((h for h in trainer.history if h["epoch"] == trainer.best_epoch), None)
    keys = ("val/loss", "val/flow_epe", "val/zero_flow_epe", "val/median_dsi_t4", "val/median_dsi_t5",
            "val/photoreceptor_variance_share", "val/silent_fraction", "val/forgetting_steps")
    return {
        "task": "fly_task",
        "experiment": cfg.name,
        **summary,
        "best": None if best is None else {k: best.get(k) for k in keys},
        "final": None if not trainer.history else {k: trainer.history[-1].get(k) for k in keys},
        "parameters_file": str(export),
    }
