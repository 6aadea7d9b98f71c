"""Finding a trained forecaster in a run directory (for `neurocast adapt` and `training.init_from`).

Accepted: a forecasting run (``task: forecast``; its first seed unless one is named), one
of its ``seeds/<s>`` directories, a ``forecast_compare`` run (``models/<label>/``: the
first POCO model unless ``model`` names one), a ``ttt_compare`` run (``methods/<mode>/``:
the first method unless ``model`` names one), or a checkpoint file inside a seed directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from neurocast.config import validate
from neurocast.errors import ConfigError, RunError
from neurocast.runs import RunDir
from neurocast.schema.forecast import ForecastExperiment


def _has_checkpoint(path: Path) -> bool:
    return (path / "checkpoints" / "best.pt").exists() or (path / "checkpoints" / "final.pt").exists()


def _pick(options: list[str], wanted: str | None, what: str, where: Path) -> str:
    if wanted is None:
        return options[0]
    if wanted not in options:
        raise ConfigError(f"{what} {wanted!r} is not in {where} ({', '.join(options)})")
    return wanted


def forecast_run(path: str | Path, seed: int | None = None,
                 model: str | None = None) -> tuple[RunDir, ForecastExperiment]:
    """(seed run directory, its forecasting config with the chosen model) for any accepted run path."""
    p = Path(path).expanduser()
    if p.is_file():
        p = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    run = RunDir.open(p)
    data = run.read_config()
    task = data.get("task")
    if task == "ttt_compare":
        methods = data.get("methods") or ["standard", "fomaml", "e2e_ttt"]
        present = [m for m in methods if (run.path / "methods" / m).is_dir()]
        if not present:
            raise RunError(f"{run.path} has no trained method yet (methods/<mode>/)")
        return forecast_run(run.path / "methods" / _pick(present, model, "--model (method)", run.path), seed)
    if task == "forecast_compare":
        models = data.get("models") or {}
        labels = [k for k in models if (run.path / "models" / k).is_dir()]
        if not labels:
            raise RunError(f"{run.path} has no trained model yet (models/<label>/)")
        if model is None:
            labels = [k for k in labels if models[k].get("kind", "poco") == "poco"] or labels
        label = _pick(labels, model, "--model", run.path)
        data = {**{k: v for k, v in data.items() if k != "models"}, "task": "forecast", "model": models[label]}
        base = run.path / "models" / label
    elif task == "forecast":
        base = run.path
    else:
        raise RunError(f"{run.path} is not a forecasting run (task {task!r}); adapt needs forecast, forecast_compare "
                       "or ttt_compare")
    cfg = validate(ForecastExperiment, data, f"config {run.config_path}")
    if _has_checkpoint(base):
        return RunDir(base), cfg  # already a seed directory
    if base.name.isdigit() and base.parent.name == "seeds":
        raise RunError(f"{base} has no checkpoint (best.pt or final.pt) yet")
    seed = cfg.training.seeds[0] if seed is None else seed
    sp = base / "seeds" / str(seed)
    if not sp.is_dir():
        raise RunError(f"{base} has no seed {seed} (seeds: {cfg.training.seeds})")
    if not _has_checkpoint(sp):
        raise RunError(f"{sp} has no checkpoint (best.pt or final.pt) yet")
    return RunDir(sp), cfg


def load_pretrained(model: torch.nn.Module, source: str | Path, seed: int | None = None) -> dict[str, Any]:
    """Copy every parameter of a trained run's checkpoint whose name and shape match into ``model``.

    From a run with several seeds, the seed ``seed`` is used where the run has it (so every
    seed of a new run starts from its own pretrained model), else the run's first seed.

    Per-session embedding tables load only where the sessions are the same (same shape).
    A meta-learned initialisation (``init_unit``, ``init_session``) absent from the
    checkpoint starts at the mean of its embeddings - the state a standard model's new
    session starts in. Returns {"checkpoint", "loaded", "skipped"}.
    """
    from neurocast.checkpoints import load_checkpoint

    p = Path(source).expanduser()
    if p.is_file():
        ckpt = p
    else:
        try:
            ckpt = forecast_run(p, seed)[0].best_checkpoint()
        except RunError:
            if seed is None:
                raise
            ckpt = forecast_run(p)[0].best_checkpoint()
    state = load_checkpoint(ckpt, map_location="cpu")["model"]
    own = model.state_dict()
    loaded, skipped = [], []
    with torch.no_grad():
        for k, v in own.items():
            if k in state and tuple(state[k].shape) == tuple(v.shape):
                v.copy_(state[k].to(v.dtype))
                loaded.append(k)
            else:
                skipped.append(k)
        for name, table in (("init_unit", "unit_emb"), ("init_session", "session_emb")):
            if name in own and name not in state and table in state:
                own[name].copy_(state[table].float().mean(0))
                loaded.append(f"{name} (mean of {table})")
                skipped.remove(name)
    backbone = [k for k in loaded if not k.startswith(("unit_emb", "session_emb", "init_"))]
    if not backbone:
        raise ConfigError(f"training.init_from: no parameter of {ckpt} matches this model (different model kind or "
                          "size?)")
    return {"checkpoint": str(ckpt), "loaded": loaded, "skipped": skipped}
