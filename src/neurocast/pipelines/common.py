"""Helpers shared by pipelines: devices, seeds, preset paths, datasets."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from neurocast.errors import ConfigError, DataError

PRESETS = Path(__file__).resolve().parents[1] / "presets"


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config path as given, the same path among the built-in presets (``configs/...``), or a
    preset name (``latent_20step``, ``sim/fly_small``; user folders from $NEUROCAST_PRESETS first)."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    parts = p.parts
    candidates = [PRESETS / p]
    if parts and parts[0] == "configs":
        candidates.append(PRESETS.joinpath(*parts[1:]))
    for c in candidates:
        if c.exists():
            return c
    from neurocast import presets_index

    name = str(Path(*parts[1:]) if parts and parts[0] == "configs" else p)
    if name.endswith(".yaml"):
        name = name[:-5]
    if name in presets_index.presets():
        return presets_index.presets()[name].path
    raise ConfigError(f"config file {path} does not exist (neither here nor a preset: `neurocast experiments` lists them)")


def select_device(name: str) -> torch.device:
    from neurocast.sim.fly_dynamics import resolve_device

    return resolve_device(name)


def setup_torch(device: torch.device, *, tf32: bool = False, threads: int | None = None) -> None:
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda" and tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


def dataset_from_config(simulation: str | None, path: str | None) -> Path:
    """The dataset folder (or file) a data section points to, simulating it if needed."""
    if simulation is not None:
        from neurocast.config import load_task_config
        from neurocast.sim import simulate

        sim_cfg = load_task_config(resolve_config_path(simulation))
        return simulate(sim_cfg)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data.path {p} does not exist")
    return p


def recordings_by_session(folder: Path, **options):
    from neurocast.data import load_recordings

    return {r.session: r for r in load_recordings(folder, **options)}
