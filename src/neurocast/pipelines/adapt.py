"""`neurocast adapt RUN_DIR --data PATH`: adapt a trained forecaster to new recordings.

The new sessions are preprocessed with the run's own data settings (context, horizon,
resampling of the chosen dataset, normalisation, filters), given fresh embeddings, and
adapted on the earliest windows of their training part (a budget in windows or seconds,
default: all of it) with Adam or SGD (``--optimizer``; default: SGD at the meta inner
loop's step size for meta-trained models, Adam at 1e-3 for standard ones). The adapted
embeddings and any other adapted parameter groups (``--params``), the adaptation curves
and a figure go to ``<seed run>/adaptations/<time>_<data name>/``, whose path is printed
last. Runs of ``forecast_compare`` and ``ttt_compare`` are accepted (``--model`` picks
the model label or method).
"""

from __future__ import annotations

import time
from pathlib import Path

from neurocast.checkpoints import load_checkpoint, load_model_state, save_checkpoint
from neurocast.data.forecast_batch import SessionTable
from neurocast.data.forecast_data import normalization_protocol, prepare_sessions
from neurocast.devices import select_device
from neurocast.errors import ConfigError
from neurocast.eval.adaptation import adapt_session, mean_curve, resolve_optimizer
from neurocast.models.factory import build_forecaster
from neurocast.pipelines.common import recordings_by_session
from neurocast.pipelines.forecast import model_config_for
from neurocast.pipelines.trained_runs import forecast_run
from neurocast.progress import info
from neurocast.report import forecast_figures
from neurocast.report.tables import fmt, format_table
from neurocast.runs import write_json


def adapt_run(run_dir, data_path, *, steps=None, lr=None, budget=None, seconds=None, dataset=None, seed=None,
              params=None, init=None, dt=None, eval_every: int = 1, optimizer=None, normalization=None,
              holdout=None, model_label=None) -> Path:
    """Adapt the trained forecaster of ``run_dir`` to the recordings at ``data_path``; returns the adaptation
    folder (``<seed run>/adaptations/<time>_<name>/``: adapted tensors, ``adaptation.json``, a figure).

    Every argument left None takes the run's ``eval.adaptation`` setting: ``steps`` of ``optimizer``
    (adam / sgd) at ``lr`` on ``params`` (embeddings, film, ...) from ``init``; the support is the
    earliest ``budget`` windows or ``seconds`` of each session's training part; ``holdout`` is the
    fraction held back for early stopping; ``normalization`` is session or support. ``dataset``:
    which of the run's datasets the data belongs to (default: the first); ``seed`` / ``model_label``:
    which seed and model of the run (default: the first); ``dt``: frame interval for files that do
    not store it; the query score is recorded every ``eval_every`` steps."""
    sr, cfg = forecast_run(run_dir, seed, model_label)
    ad = cfg.eval.adaptation
    steps = ad.steps if steps is None else steps
    optimizer, lr = resolve_optimizer(optimizer or ad.optimizer, lr if lr is not None else ad.lr, cfg.training)
    params = list(params or ad.params)
    init = init or ad.init
    normalization = normalization or ad.normalization
    holdout = ad.holdout if holdout is None else holdout
    if budget is not None and seconds is not None:
        raise ConfigError("give --budget (windows) or --seconds, not both")
    names = [d.name for d in cfg.data.datasets]
    dname = dataset or names[0]
    if dname not in names:
        raise ConfigError(f"--dataset {dname!r} is not one of the run's datasets ({', '.join(names)})")
    spec = cfg.data.datasets[names.index(dname)]
    ckpt = sr.best_checkpoint()
    device = select_device(cfg.training.device)
    state = load_checkpoint(ckpt, map_location=device)
    table = SessionTable.from_dict(state["task"]["sessions"])
    model = build_forecaster(model_config_for(cfg, cfg.model), table, cfg.data.context, cfg.data.horizon).to(device)
    load_model_state(model, state["model"], str(ckpt))
    if not hasattr(model, "embedding_names"):
        raise ConfigError(f"model {cfg.model.kind!r} has no per-session embeddings to adapt (use a POCO run)")
    options = {**spec.options, "dt": dt if dt is not None else spec.dt}
    recs = recordings_by_session(Path(data_path), **{k: v for k, v in options.items() if v is not None})
    data_cfg = cfg.data.model_copy(update={"held_out_sessions": []})
    sessions = prepare_sessions([(dname, list(recs.values()), spec.resample_dt)], data_cfg)
    for s in sessions:
        s.dataset = names.index(dname)
    out = sr.path / "adaptations" / f"{time.strftime('%Y%m%d-%H%M%S')}_{Path(data_path).stem or 'data'}"
    k = 1
    while out.exists():
        out = out.with_name(f"{out.name}-{k}")
        k += 1
    out.mkdir(parents=True)
    results = []
    lr_text = "learned step sizes" if lr is None else f"lr {lr:g}"
    for i, s in enumerate(sessions):
        info(f"adapting to {s.name} ({s.D} units): {steps} {optimizer} steps, {lr_text}, {'+'.join(params)}")
        r = adapt_session(model, s, cfg.data.context, cfg.data.horizon, device, steps=steps, lr=lr, params=params,
                          init=init, optimizer=optimizer, support_windows=budget, support_seconds=seconds,
                          query_windows=ad.query_windows, batch_size=ad.batch_size, eval_every=eval_every,
                          normalization=normalization, holdout=holdout, seed=i)
        results.append(r)
        if holdout and r.holdout_windows == 0 and steps:
            info(f"{s.name}: {r.support_windows} support windows are too few to hold any back for early stopping "
                 f"(needs > {cfg.data.horizon + 1}); all {steps} steps were taken - with few windows adaptation "
                 "overfits after a few steps (see --steps)")
        save_checkpoint(out / f"adapted_{s.name.split('/', 1)[-1]}.pt", {
            "session": s.name, "embeddings": r.embeddings(), "parameters": r.adapted_parameters(),
            "base_checkpoint": str(ckpt), "params": params, "units": s.units,
        })
    write_json(out / "adaptation.json", {
        "run": str(sr.path), "checkpoint": str(ckpt), "data": str(data_path), "dataset": dname, "steps": steps,
        "optimizer": optimizer, "lr": lr, "params": params, "init": init, "normalization": normalization,
        "holdout": holdout, "support_windows": budget, "support_seconds": seconds,
        "sessions": [r.summary() for r in results],
        "protocol": normalization_protocol(cfg.data),
    })
    steps_arr, mean = mean_curve(results)
    forecast_figures.adaptation_curves({f"{len(results)} session(s), mean": (steps_arr, mean)},
                                       f"adaptation of {sr.path.name} to {Path(data_path).name}",
                                       out / "adaptation_curve.png")
    header = ["session", "support windows", "zero-shot score", f"score after {steps} steps"]
    if any(r.best_step is not None for r in results):
        header.append("early-stopped score (step)")
    rows = [[r.session, str(r.support_windows), fmt(r.scores[0]), fmt(r.scores[-1])]
            + ([f"{fmt(r.early_stopped_score)} ({r.best_step})" if r.best_step is not None else "-"]
               if len(header) > 4 else []) for r in results]
    print(format_table(header, rows))
    return out
