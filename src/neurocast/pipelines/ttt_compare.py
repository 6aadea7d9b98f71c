"""`compare_ttt_methods`: one forecasting run per training mode, adapted to the same held-out sessions.

    <run>/methods/standard/   a complete forecasting run (seeds/<s>/...)
    <run>/methods/fomaml/
    <run>/methods/e2e_ttt/
    <run>/comparison.md, comparison.csv, adaptation_curves.png, summary.json

For every method, budget and seed the adaptation protocol (eval.adaptation, see
neurocast.eval.adaptation_protocol) runs on the held-out sessions; the table pools every
(seed, held-out session) pair and gives, per method and budget, on the same query
windows: zero-shot with mean-initialised and with the method's own embeddings, the gain
after ``steps`` adaptation steps (mean and 95% interval), the early-stopped and long
fine-tuning scores, steps-to-95% (only where the gain's interval lies above 0), NLinear
(training sessions / support) and POCO from scratch on the support, the meta inner
loop's support-loss ratio (after / before) and the seconds per training step.
A SIGTERM stops the whole comparison (the method being trained checkpoints first);
``neurocast train --resume RUN`` continues it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.config import to_yaml
from neurocast.data.forecast_data import normalization_protocol
from neurocast.pipelines.forecast import (
    load_forecast_data,
    resolved_config,
    resume_forecast,
    train_forecast,
)
from neurocast.progress import info
from neurocast.report import forecast_figures
from neurocast.report.tables import fmt, fmt_interval, format_table, markdown_table
from neurocast.runs import RunDir
from neurocast.schema.forecast import ForecastExperiment, TTTCompare
from neurocast.train.loop import stop_signal


def method_config(cfg: TTTCompare, method: str, standard_run: Path | None = None) -> ForecastExperiment:
    data = cfg.model_dump(mode="json")
    data.pop("methods")
    data.pop("meta_from_standard")
    meta_steps = data.pop("meta_max_steps")
    data["task"] = "forecast"
    data["name"] = f"{cfg.name}_{method}"
    data["training"]["mode"] = method
    if method != "standard":
        if standard_run is not None:
            data["training"]["init_from"] = str(standard_run)
        if meta_steps is not None:
            data["training"]["max_steps"] = meta_steps
        if "standard" in cfg.methods:  # the baselines do not depend on the method: the standard run scores them
            data["eval"]["adaptation"]["baselines"] = []
    return ForecastExperiment.model_validate(data)


def train_ttt_compare(cfg: TTTCompare, run_path: str | Path | None = None) -> RunDir:
    """Train every method of a ttt_compare config into one run (``methods/<mode>/``) and compare their
    adaptation to the held-out sessions; ``run_path``: exactly this new directory. Returns the run."""
    sessions, _, paths = load_forecast_data(cfg.data)  # resolve (and simulate) once, fail early on bad data
    resolved = resolved_config(cfg, paths, sessions)
    text = to_yaml(resolved)
    run = RunDir.new(run_path, cfg, text, seed=cfg.training.seeds[0])
    info(f"run directory: {run.path}")
    try:
        return _methods(resolved, run)
    finally:
        run.release()


def resume_ttt_compare(run_path: str | Path) -> RunDir:
    """Continue a comparison: finished methods are kept, interrupted ones resume from their
    checkpoints, methods that never started are trained."""
    with RunDir.resuming(run_path) as (run, cfg):
        run.set_status("running")
        return _methods(cfg, run, resume=True)


def _methods(resolved: TTTCompare, run: RunDir, resume: bool = False) -> RunDir:
    with run.status_on_error():
        results = {}
        for method in resolved.methods:
            if stop_signal() is not None:  # SIGTERM/SIGUSR2 during an earlier method
                break
            info(f"== {method} ==")
            path = run.path / "methods" / method
            mrun = RunDir(path)
            if resume and (path / "config.yaml").exists():
                if mrun.status != "complete":
                    mrun = resume_forecast(path)
            else:
                standard = run.path / "methods" / "standard" if resolved.meta_from_standard else None
                mrun = train_forecast(method_config(resolved, method, standard), path)
            if mrun.status != "complete":  # SIGTERM: stop here, do not start the next method
                break
            results[method] = collect(mrun)
        if len(results) < len(resolved.methods):
            run.set_status("terminated")
            return run
        protocol = normalization_protocol(resolved.data)
        summary = compare(results, run.path, protocol)
    run.write_summary({"task": "ttt_compare", "experiment": resolved.name, "protocol": protocol, **summary})
    run.set_status("complete")
    return run


def collect(mrun: RunDir) -> dict[int, dict[str, Any]]:
    """Per seed: the seed summary (with its 'adaptation' section)."""
    out = {}
    for sd in sorted((mrun.path / "seeds").iterdir()):
        s = RunDir(sd).read_summary()
        if s is not None:
            out[int(sd.name)] = s
    return out


def compare(results: dict[str, dict[int, dict[str, Any]]], folder: Path,
            protocol: dict | None = None) -> dict[str, Any]:
    from neurocast.eval.adaptation_protocol import pool

    header = ["method", "budget", "zero-shot (mean init)", "zero-shot (own init)", "adapted (K steps)", "gain",
              "early-stopped", "long fine-tune", "steps to 95%", "NLinear (train / support)", "from scratch",
              "inner support ratio", "s / train step", "pairs"]
    rows, table, curves = [], {}, {}
    for method, seeds in results.items():
        budgets = sorted({b for s in seeds.values() for b in (s.get("adaptation") or {}).get("budgets", {})},
                         key=lambda b: (b.split()[0] == "all", float(b.split()[0]) if b.split()[0] != "all" else 0))
        secs = [s["seconds_per_step"] for s in seeds.values() if s.get("seconds_per_step") is not None]
        ratios = [s["inner_support_ratio"]["last"] for s in seeds.values() if s.get("inner_support_ratio")]
        for b in budgets:
            runs = [s["adaptation"]["budgets"][b] for s in seeds.values()
                    if b in (s.get("adaptation") or {}).get("budgets", {})]
            st = pool(runs)
            st.pop("per_session")
            if method != "standard" and b in table.get("standard", {}):
                for key in ("nlinear_train", "nlinear_support", "scratch"):  # same windows, scored once
                    if not st[key]["n"]:
                        st[key] = table["standard"][b][key]
            st["train_seconds_per_step"] = float(np.mean(secs)) if secs else None
            st["inner_support_ratio"] = float(np.mean(ratios)) if ratios else None
            st["seeds"] = len(runs)
            table.setdefault(method, {})[b] = st
            s95 = st["steps_to_95"]
            rows.append([method, b, fmt_interval(st["zero_shot_mean_init"]), fmt_interval(st["zero_shot_own_init"]),
                         fmt_interval(st["adapted"]),
                         fmt_interval(st["gain"]), fmt_interval(st["early_stopped"]), fmt_interval(st["long_finetune"]),
                         str(s95) if s95 is not None else st["steps_to_95_note"].split(" (")[0],
                         f"{fmt_interval(st['nlinear_train'])} / {fmt_interval(st['nlinear_support'])}",
                         fmt_interval(st["scratch"]),
                         fmt(st["inner_support_ratio"]), fmt(st["train_seconds_per_step"]), str(st["n"])])
            curves[f"{method}, {b}"] = (np.asarray(st["steps"]), np.asarray(st["mean_curve"]))
    leaking = bool(protocol and protocol["leaking"])
    banner = f"> {protocol['note']}\n\n" if leaking else ""
    (folder / "comparison.md").write_text(banner + markdown_table(header, rows) + "\n")
    if leaking:
        print(protocol["note"])
    with open(folder / "comparison.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    forecast_figures.adaptation_curves(curves, "adaptation to held-out sessions: mean over seeds and sessions",
                                       folder / "adaptation_curves.png")
    print(format_table(header, rows))
    return {"methods": table}
