"""Multi-session forecasting pipeline: `neurocast train` for task: forecast / forecast_compare.

Run directory layout (every ``seeds/<seed>/`` is itself a complete run directory)::

    <run>/config.yaml  env.json  summary.json  status
    <run>/seeds/<seed>/{config.yaml, metrics.jsonl, checkpoints/, figures/, summary.json, status}
    <run>/models/<label>/seeds/<seed>/...       (task: forecast_compare)

After training, each seed's best-validation checkpoint is evaluated on the test split;
its validation predictions and targets are saved in ``figures/val_predictions.npz``.
The top-level summary gives, per dataset, the mean and 95% interval over seeds of the
test score, MSE and MAE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from neurocast.checkpoints import load_checkpoint, load_model_state, resume_checkpoint, seed_everything
from neurocast.config import to_yaml
from neurocast.data.forecast_data import Session, normalization_protocol, prepare_sessions, session_table
from neurocast.devices import select_device, setup_torch
from neurocast.errors import ConfigError, DataError
from neurocast.models.factory import build_forecaster
from neurocast.pipelines.common import fit_tracked, recordings_by_session
from neurocast.presets_index import resolve_config_path
from neurocast.progress import info
from neurocast.report import forecast_figures
from neurocast.report.tables import fmt, fmt_interval, format_table, interval, markdown_table
from neurocast.runs import RunDir
from neurocast.schema.forecast import ForecastData
from neurocast.train.forecast_task import ForecastTask
from neurocast.train.loop import Trainer, build_optimizer, stop_signal
from neurocast.train.tracking import Tracker

# ---------------------------------------------------------------------------- data


def dataset_path(data: ForecastData, spec) -> Path:
    if spec.simulation is not None:
        from neurocast.config import deep_merge, read_yaml
        from neurocast.sim import simulate
        from neurocast.tasks import load_task_config

        sim = read_yaml(resolve_config_path(spec.simulation))
        if spec.simulation_overrides:
            sim = deep_merge(sim, {k.replace("-", "_"): v for k, v in spec.simulation_overrides.items()})
        return simulate(load_task_config(sim))
    p = Path(spec.path).expanduser()
    if not p.is_absolute() and data.root is not None:
        p = Path(data.root).expanduser() / p
    if not p.exists():
        hint = "" if data.root is not None else " (set --data.root to the folder that holds it)"
        raise DataError(f"dataset {spec.name!r}: {p} does not exist{hint}")
    return p


def load_forecast_data(data: ForecastData) -> tuple[list[Session], list[str], dict[str, str]]:
    """(preprocessed sessions, dataset names, resolved dataset paths)."""
    inputs, paths = [], {}
    for spec in data.datasets:
        path = dataset_path(data, spec)
        paths[spec.name] = str(path.resolve())
        options = {**spec.options, **({} if spec.dt is None else {"dt": spec.dt})}
        if spec.format:
            options["format"] = spec.format
        recs = recordings_by_session(path, **options)
        if spec.sessions is not None:
            missing = [s for s in spec.sessions if s not in recs]
            if missing:
                raise DataError(f"dataset {spec.name!r}: session {missing[0]!r} is not in {path} ({', '.join(recs)})")
            recs = {k: recs[k] for k in spec.sessions}
        inputs.append((spec.name, list(recs.values()), spec.resample_dt))
    held = expand_held_out(data.held_out_sessions, {name: [r.session for r in recs] for name, recs, _ in inputs})
    sessions = prepare_sessions(inputs, data.model_copy(update={"held_out_sessions": held}))
    return sessions, [d.name for d in data.datasets], paths


def expand_held_out(entries: list[str], ids: dict[str, list[str]]) -> list[str]:
    """Held-out session entries with ``last:K``, ``first:K`` and ``A..B`` expanded to session names.

    ``ids``: dataset name -> its session ids. Plain names pass through unchanged.
    """
    out: list[str] = []
    for entry in entries:
        dname, sep, spec = entry.partition("/")
        if not sep:
            dname, spec = None, entry
        if not (spec.startswith(("last:", "first:")) or ".." in spec):
            out.append(entry)
            continue
        if dname is None:
            if len(ids) != 1:
                raise ConfigError(f"data.held_out_sessions: {entry!r} needs a dataset prefix (one of {', '.join(ids)})")
            dname = next(iter(ids))
        if dname not in ids:
            raise ConfigError(f"data.held_out_sessions: {entry!r}: no dataset {dname!r} ({', '.join(ids)})")
        names = sorted(ids[dname])
        if ".." in spec:
            a, b = spec.split("..", 1)
            chosen = [n for n in names if a <= n <= b]
        else:
            kind, _, k = spec.partition(":")
            try:
                k = int(k)
            except ValueError:
                raise ConfigError(f"data.held_out_sessions: {entry!r}: K in {kind}:K must be an integer") from None
            if not 1 <= k < len(names):
                raise ConfigError(f"data.held_out_sessions: {entry!r}: K must be in 1..{len(names) - 1} "
                                  f"(dataset {dname!r} has {len(names)} sessions)")
            chosen = names[-k:] if kind == "last" else names[:k]
        if not chosen:
            raise ConfigError(f"data.held_out_sessions: {entry!r} selects no session of {dname!r}")
        out.extend(f"{dname}/{n}" for n in chosen)
    return list(dict.fromkeys(out))


def resolved_config(cfg, paths: dict[str, str], sessions: list[Session] | None = None):
    """The config with every dataset pointing at the exact folder used (and held-out patterns expanded)."""
    datasets = [d.model_copy(update={"path": paths[d.name], "simulation": None, "simulation_overrides": {}})
                for d in cfg.data.datasets]
    update = {"root": None, "datasets": datasets}
    if sessions is not None:
        update["held_out_sessions"] = [s.name for s in sessions if s.held_out]
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})


# ---------------------------------------------------------------------------- one model, one seed


def _trainer(cfg, task: ForecastTask, run: RunDir) -> tuple[Trainer, Tracker]:
    tr = cfg.training
    opt_kwargs = dict(tr.optimizer_kwargs)
    if tr.weight_decay and "weight_decay" not in opt_kwargs:
        opt_kwargs["weight_decay"] = tr.weight_decay
    opt = build_optimizer(tr.optimizer, task.model.parameters(), tr.learning_rate, opt_kwargs)
    tracker = Tracker(run, cfg.logging, cfg.model_dump(mode="json"))
    trainer = Trainer(task, opt, run=run, tracker=tracker, config=cfg.model_dump(mode="json"), epochs=task.epochs,
                      grad_clip=tr.grad_clip, checkpoint_every=tr.save_checkpoint_every,
                      epoch_label=lambda e: {"train/step_end": min((e + 1) * tr.val_every, tr.max_steps)})
    return trainer, tracker


def model_config_for(cfg, model_cfg):
    """Meta-training with a learned initialisation (or learned step sizes) needs them in the model."""
    meta = cfg.training.meta
    if cfg.training.mode != "standard" and model_cfg.kind == "poco":
        update = {}
        if meta.init == "learned":
            update["learned_init"] = True
        if meta.learn_inner_lr:
            update["learned_inner_lr"] = meta.inner_lr
        return model_cfg.model_copy(update=update)
    return model_cfg


def build_task(cfg, model_cfg, sessions, names, seed: int, device) -> ForecastTask:
    """The training task of one (model, seed) of a forecasting config: the model built for the training
    sessions' table (initialised from ``training.init_from`` when set), wrapped in a ForecastTask
    (standard training) or a MetaTask (fomaml / e2e_ttt) on ``device``."""
    model_cfg = model_config_for(cfg, model_cfg)
    seed_everything(seed)
    table = session_table(sessions, len(names))
    model = build_forecaster(model_cfg, table, cfg.data.context, cfg.data.horizon)
    if cfg.training.init_from:
        from neurocast.pipelines.trained_runs import load_pretrained

        done = load_pretrained(model, cfg.training.init_from, seed)
        info(f"initialised from {done['checkpoint']}: {len(done['loaded'])} tensors loaded, "
             f"{len(done['skipped'])} kept "
             f"({', '.join(done['skipped'][:4])}{' ...' if len(done['skipped']) > 4 else ''})")
    if cfg.training.mode == "standard":
        cls = ForecastTask
    else:
        from neurocast.train.meta_task import MetaTask as cls
    task = cls(cfg.data, cfg.training, sessions, names, model, device, seed)
    task.set_weights([d.weight for d in cfg.data.datasets])
    return task


def train_seed(cfg, model_cfg, sessions, names, seed: int, run: RunDir, device, resume: bool = False) -> dict[str, Any]:
    if cfg.training.mode != "standard" and model_cfg.kind != "poco":
        raise ConfigError(f"training.mode={cfg.training.mode} adapts embeddings: it needs model.kind poco, not "
                          f"{model_cfg.kind}")
    task = build_task(cfg, model_cfg, sessions, names, seed, device)
    trainer, tracker = _trainer(cfg, task, run)
    if resume and any(run.checkpoints.glob("*.pt")):
        trainer.resume(*resume_checkpoint(run.checkpoints))
        info(f"{run.path}: resuming after step {trainer.step}")
    elif resume:  # killed before its first checkpoint: start again, without the old logs
        trainer.restart_logs_at(1)
    summary = fit_tracked(trainer, tracker, run)
    ratios = [r["train/support_ratio"] for r in trainer.history if "train/support_ratio" in r]
    if ratios:  # meta-training: how much the inner loop lowered the support loss (after / before)
        summary["inner_support_ratio"] = {"first": ratios[0], "last": ratios[-1]}
    if trainer.stop_requested:
        run.set_status("terminated")
        return {"terminated": True, **summary}
    result = finish_seed(cfg, task, run, names, summary)
    run.set_status("complete")
    return result


def finish_seed(cfg, task: ForecastTask, run: RunDir, names: list[str],
                train_summary: dict[str, Any]) -> dict[str, Any]:
    """Test on the best-validation checkpoint; figures; validation predictions as arrays."""
    ckpt = run.best_checkpoint()
    protocol = normalization_protocol(cfg.data)
    leak = " [LEAKING: normalised on whole recordings]" if protocol["leaking"] else ""
    state = load_checkpoint(ckpt, map_location=task.device)
    load_model_state(task.model, state["model"], str(ckpt))
    test = task.evaluate("test")
    val = task.evaluate("val", keep=True)
    preds = val["sessions"].pop("_predictions")
    np.savez_compressed(
        run.figures / "val_predictions.npz",
        **{f"{k.replace('/', '__')}__{field}": v for k, d in preds.items() for field, v in d.items()},
    )
    forecast_figures.per_horizon_error(test["sessions"], names, f"test error per horizon step ({ckpt.name}){leak}",
                                       run.figures / "per_horizon_error.png")
    forecast_figures.session_scores({k: v["score"] for k, v in test["sessions"].items()},
                                    f"test prediction score per session{leak}", run.figures / "session_scores.png")
    first = next(iter(preds))
    p = preds[first]
    sess = next(s for s in task.sessions if s.name == first)
    w = int(np.argmax(np.var(p["target"], axis=(1, 2))))  # an eventful window
    units = list(np.argsort(-p["target"][w].var(0))[: cfg.eval.trace_units])
    forecast_figures.forecast_traces(p["context"][w], p["target"][w], p["prediction"][w], [int(u) for u in units],
                                     sess.dt, f"{first}: validation window at frame {int(p['starts'][w])}",
                                     run.figures / "forecast_traces.png")
    strip = lambda ev: {k: v for k, v in ev.items() if k != "sessions"}  # noqa: E731
    adaptation = adaptation_protocol(cfg, task, run)
    summary = {
        **train_summary,
        "checkpoint_tested": ckpt.name,
        "protocol": protocol,
        "test": {**strip(test), "sessions": {k: {x: v[x] for x in ("score", "mse", "mae", "copy_mse", "windows")}
                                             for k, v in test["sessions"].items()}},
        "val": strip(val),
        "parameters": int(sum(p.numel() for p in task.model.parameters())),
    }
    if adaptation:
        summary["adaptation"] = adaptation
    run.write_summary(summary)
    return summary


def adaptation_protocol(cfg, task: ForecastTask, run: RunDir) -> dict[str, Any] | None:
    """The adaptation protocol (neurocast.eval.adaptation_protocol) on every held-out session.

    Baselines: NLinear fitted on the training sessions' training windows and on each
    support set, and a POCO of the same configuration trained from scratch on the support.
    """
    from neurocast.data.forecast_batch import SessionTable
    from neurocast.eval.adaptation import resolve_optimizer
    from neurocast.eval.adaptation_protocol import fit_nlinear, run_protocol
    from neurocast.schema.forecast import NLinearConfig

    held = [s for s in task.sessions if s.held_out]
    if not held or not hasattr(task.model, "embedding_names"):
        return None
    ad = cfg.eval.adaptation
    if not ad.budgets and not ad.budget_seconds:
        return None
    optimizer, lr = resolve_optimizer(ad.optimizer, ad.lr, cfg.training)
    init = ad.init if ad.init != "auto" else ("learned" if hasattr(task.model, "init_unit") else "mean")
    C, P, n_data = task.C, task.P, len(task.dataset_names)
    nl_cfg = NLinearConfig()

    def nlinear():
        return build_forecaster(nl_cfg, SessionTable([1], [0], n_datasets=n_data), C, P)

    nlinear_train = None
    if "nlinear" in ad.baselines:  # closed form on (at most 4096 of) the training sessions' training windows
        rng = np.random.default_rng(0)
        picks = np.concatenate([np.stack([np.full(w.size, i), w], 1) for i, s in enumerate(task.train_sessions)
                                if (w := s.windows("train", C + P)).size])
        picks = picks[np.sort(rng.choice(len(picks), min(4096, len(picks)), replace=False))]
        from neurocast.data.forecast_data import make_batch

        batches = [make_batch(task.train_sessions, picks[i : i + 256], C, P, task.tensors, task.unit_offsets,
                              task.device) for i in range(0, len(picks), 256)]
        nlinear_train = fit_nlinear(nlinear().to(task.device), batches)
    scratch_cfg = None
    if cfg.model.kind == "poco":
        scratch_cfg = model_config_for(cfg, cfg.model).model_copy(update={"learned_init": False,
                                                                          "learned_inner_lr": None})

    def scratch(s):
        return build_forecaster(scratch_cfg, SessionTable([s.D], [s.dataset], n_datasets=n_data), C, P)

    seed = int(run.path.name) if run.path.name.isdigit() else 0
    out = run_protocol(task.model, held, C, P, task.device, ad, init=init, optimizer=optimizer, lr=lr,
                       nlinear=nlinear if "nlinear" in ad.baselines else None, nlinear_train=nlinear_train,
                       scratch=scratch if "scratch" in ad.baselines and scratch_cfg is not None else None, seed=seed)
    curves = {label: (np.asarray(b["steps"]), np.asarray(b["mean_curve"]), np.asarray(b["ci95_curve"]))
              for label, b in out["budgets"].items()}
    forecast_figures.adaptation_curves(
        curves, f"adaptation to {len(held)} held-out session(s) ({'+'.join(ad.params)}, {optimizer}, "
        f"lr {'learned' if lr is None else f'{lr:g}'})", run.figures / "adaptation_curves.png")
    return out


# ---------------------------------------------------------------------------- runs


def _aggregate_seeds(results: dict[int, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": sorted(results), "datasets": {}}
    done = {s: r for s, r in results.items() if "test" in r}
    for name in names:
        entry = {}
        for metric in ("score", "mse", "mae"):
            vals = [r["test"]["datasets"][name][metric] for r in done.values() if name in r["test"]["datasets"]]
            entry[metric] = interval(vals, keep_values=True)
        out["datasets"][name] = entry
    for metric in ("score", "mse", "mae"):
        out[metric] = interval([r["test"][metric] for r in done.values()])
    return out


def _setup(cfg):
    tr = cfg.training
    device = select_device(tr.device)
    setup_torch(device, threads=tr.num_threads)
    return device


def _run_models(cfg, models: dict[str, Any], run: RunDir, sessions, names, device, resume: bool) -> dict[str, Any]:
    """Train every (model, seed) into its own run directory; returns aggregated results per model."""
    yaml_text = run.config_path.read_text()
    out = {}
    for label, model_cfg in models.items():
        base = run.path if label is None else run.path / "models" / label
        results = {}
        for seed in cfg.training.seeds:
            if stop_signal() is not None:  # SIGTERM/SIGUSR2 during an earlier seed: stop here
                break
            sp = base / "seeds" / str(seed)
            if resume and (sp / "summary.json").exists() and RunDir(sp).status == "complete":
                results[seed] = RunDir(sp).read_summary()
                continue
            if resume and (sp / "config.yaml").exists():
                seed_run = RunDir(sp).claim()
            else:
                seed_run = RunDir.create_at(sp, yaml_text, seed=seed, extra_env={"model": label},
                                            _exists_ok=resume)
            info(f"training {label or cfg.model.kind} seed {seed} -> {sp}")
            results[seed] = train_seed(cfg, model_cfg, sessions, names, seed, seed_run, device, resume=resume)
            if results[seed].get("terminated"):  # SIGTERM: stop the whole run, not just this model
                out[label] = {"model": model_cfg.kind, **_aggregate_seeds(results, names)}
                return out
        out[label] = {"model": model_cfg.kind, **_aggregate_seeds(results, names)}
    return out


def train_forecast(cfg, run_path: str | Path | None = None) -> RunDir:
    """Train a forecast or forecast_compare config (every model and seed, each in its own
    ``seeds/<seed>/`` run directory), test the best checkpoints and run the adaptation protocol on
    held-out sessions; ``run_path``: exactly this new directory (sweeps). Returns the run, whose
    ``summary.json`` holds mean and 95% interval over seeds of the test score, MSE and MAE."""
    device = _setup(cfg)
    sessions, names, paths = load_forecast_data(cfg.data)
    resolved = resolved_config(cfg, paths, sessions)
    yaml_text = to_yaml(resolved)
    extra = {"datasets": paths, "task": cfg.task,
             "sessions": {s.name: {"frames": s.T, "units": s.D, "dt": s.dt, "held_out": s.held_out} for s in sessions}}
    seed0 = cfg.training.seeds[0]
    run = RunDir.new(run_path, cfg, yaml_text, seed=seed0, extra_env=extra)
    info(f"run directory: {run.path}")
    try:
        return _complete(cfg, run, sessions, names, device, resume=False)
    finally:
        run.release()


def resume_forecast(run_path: str | Path) -> RunDir:
    """Continue a forecasting run: finished seeds (and models) are kept, interrupted ones resume from
    their newest usable checkpoint. Returns the run."""
    with RunDir.resuming(run_path) as (run, cfg):
        device = _setup(cfg)
        sessions, names, _ = load_forecast_data(cfg.data)
        run.set_status("running")
        return _complete(cfg, run, sessions, names, device, resume=True)


def _complete(cfg, run: RunDir, sessions, names, device, resume: bool) -> RunDir:
    models = cfg.trained_models
    with run.status_on_error():
        results = _run_models(cfg, models, run, sessions, names, device, resume)
    protocol = normalization_protocol(cfg.data)
    summary = {"task": cfg.task, "experiment": cfg.name, "datasets": names, "protocol": protocol,
               "sessions": {s.name: {"units": s.D, "frames": s.T, "held_out": s.held_out} for s in sessions}}
    if cfg.task == "forecast_compare":
        summary["models"] = {k: v for k, v in results.items()}
        header, rows = compare_table(results, names)
        banner = f"> {protocol['note']}\n\n" if protocol["leaking"] else ""
        (run.path / "comparison.md").write_text(banner + markdown_table(header, rows) + "\n")
    else:
        summary.update(results[None])
        header, rows = compare_table({cfg.model.kind: results[None]}, names)
    if protocol["leaking"]:
        print(protocol["note"])
    print(format_table(header, rows))
    terminated = stop_signal() is not None or any(
        (RunDir(p).status == "terminated") for p in run.path.rglob("seeds/*") if (p / "status").exists()
    )
    run.write_summary(summary)
    run.set_status("terminated" if terminated else "complete")
    return run


def compare_table(results: dict[str, dict[str, Any]], names: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "dataset", "test score", "test MSE", "test MAE", "seeds"]
    rows = []
    for label, r in results.items():
        for name in names:
            d = r["datasets"].get(name)
            if not d:
                continue
            s = d["score"]
            rows.append([label, name, fmt_interval(s), fmt(d["mse"]["mean"]),
                         fmt(d["mae"]["mean"]), str(len(s["values"]))])
    return header, rows


def analyze_forecast_run(run_path: str | Path, epochs, horizon=None, starts=None) -> Path:
    """Re-evaluate every seed's best checkpoint (test split) and refresh its figures (``horizon``
    and ``starts`` are roll-out settings of latent runs: forecasting runs have none)."""
    run = RunDir.open(run_path)
    cfg = run.load_config()
    if epochs not in (None, ["best"]):
        raise ConfigError("forecasting runs are analysed on their best-validation checkpoint (use --epoch best)")
    device = _setup(cfg)
    sessions, names, _ = load_forecast_data(cfg.data)
    models = cfg.trained_models
    for label, model_cfg in models.items():
        base = run.path if label is None else run.path / "models" / label
        for seed in cfg.training.seeds:
            sp = base / "seeds" / str(seed)
            if not (sp / "checkpoints").exists():
                continue
            task = build_task(cfg, model_cfg, sessions, names, seed, device)
            seed_run = RunDir(sp)
            finish_seed(cfg, task, seed_run, names, seed_run.read_summary() or {})
    return run.path
