"""`compare_ttt_methods`: one forecasting run per training mode, adapted to the same held-out sessions.

    <run>/methods/standard/   a complete forecasting run (seeds/<s>/...)
    <run>/methods/fomaml/
    <run>/methods/e2e_ttt/
    <run>/comparison.md, comparison.csv, adaptation_curves.png, summary.json

For every method, budget and seed the adaptation protocol (eval.adaptation) runs on the
held-out sessions; the table gives, per method and budget, the zero-shot score, the score
after ``steps`` adaptation steps, the long fine-tuning score and steps-to-95% (mean and
95% interval over seeds), and the seconds per meta-training step.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.config import config_hash, to_yaml, validate
from neurocast.data.forecast_data import normalization_protocol
from neurocast.eval.metrics import mean_ci95
from neurocast.pipelines.forecast import load_forecast_data, resolved_config, resume_forecast, train_forecast
from neurocast.progress import info
from neurocast.report import forecast_figures
from neurocast.report.tables import fmt, format_table, markdown_table
from neurocast.runs import RunDir
from neurocast.schema.forecast import ForecastExperiment, TTTCompare
from neurocast.train.loop import stop_signal


def method_config(cfg: TTTCompare, method: str) -> ForecastExperiment:
    data = cfg.model_dump(mode="json")
    data.pop("methods")
    data["task"] = "forecast"
    data["name"] = f"{cfg.name}_{method}"
    data["training"]["mode"] = method
    return ForecastExperiment.model_validate(data)


def train_ttt_compare(cfg: TTTCompare, run_path: str | Path | None = None) -> RunDir:
    _, _, paths = load_forecast_data(cfg.data)  # resolve (and simulate) once, fail early on bad data
    resolved = resolved_config(cfg, paths)
    text = to_yaml(resolved)
    if run_path is None:
        run = RunDir.create(cfg.runs_dir, cfg.name, text, config_hash(cfg), seed=cfg.training.seeds[0])
    else:
        run = RunDir.create_at(run_path, text, seed=cfg.training.seeds[0])
    info(f"run directory: {run.path}")
    try:
        return _methods(resolved, run)
    finally:
        run.release()


def resume_ttt_compare(run_path: str | Path) -> RunDir:
    """Continue a comparison: finished methods are kept, interrupted ones resume from their
    checkpoints, methods that never started are trained."""
    run = RunDir.open(run_path)
    cfg = validate(TTTCompare, run.read_config(), f"config {run.config_path}")
    run.claim_for_resume()
    try:
        run.set_status("running")
        return _methods(cfg, run, resume=True)
    finally:
        run.release()


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
                mrun = train_forecast(method_config(resolved, method), path)
            if mrun.status != "complete":
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


def compare(results: dict[str, dict[int, dict[str, Any]]], folder: Path, protocol: dict | None = None) -> dict[str, Any]:
    header = ["method", "budget", "zero-shot score", "adapted score", "long fine-tune score", "steps to 95%",
              "s / train step", "seeds"]
    rows, table, curves = [], {}, {}
    for method, seeds in results.items():
        budgets = sorted({b for s in seeds.values() for b in (s.get("adaptation") or {}).get("budgets", {})},
                         key=lambda b: float(b.split()[0]))
        secs = [s["seconds_per_step"] for s in seeds.values() if s.get("seconds_per_step") is not None]
        for b in budgets:
            per = [s["adaptation"]["budgets"][b] for s in seeds.values() if b in s.get("adaptation", {}).get("budgets", {})]
            entry = {}
            for key in ("zero_shot_score", "adapted_score", "long_finetune_score"):
                m, h = mean_ci95([p[key] for p in per])
                entry[key] = {"mean": m, "ci95": h}
            s95 = [p["steps_to_95"] for p in per]
            reached = [x for x in s95 if x is not None]
            entry["steps_to_95"] = {"values": s95, "median": float(np.median(reached)) if reached else None}
            entry["train_seconds_per_step"] = float(np.mean(secs)) if secs else None
            table.setdefault(method, {})[b] = entry
            rows.append([method, b, f"{fmt(entry['zero_shot_score']['mean'])} ± {fmt(entry['zero_shot_score']['ci95'], 2)}",
                         f"{fmt(entry['adapted_score']['mean'])} ± {fmt(entry['adapted_score']['ci95'], 2)}",
                         f"{fmt(entry['long_finetune_score']['mean'])} ± {fmt(entry['long_finetune_score']['ci95'], 2)}",
                         "-" if entry["steps_to_95"]["median"] is None else
                         f"{entry['steps_to_95']['median']:g} ({len(reached)}/{len(s95)} reached)",
                         fmt(entry["train_seconds_per_step"]), str(len(per))])
            steps = np.asarray(per[0]["steps"])
            mean = np.mean([p["mean_score"] for p in per], axis=0)
            curves[f"{method}, {b}"] = (steps, mean)
    leaking = bool(protocol and protocol["leaking"])
    banner = f"> {protocol['note']}\n\n" if leaking else ""
    (folder / "comparison.md").write_text(banner + markdown_table(header, rows) + "\n")
    if leaking:
        print(protocol["note"])
    with open(folder / "comparison.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    forecast_figures.adaptation_curves(curves, "adaptation to held-out sessions: mean over seeds",
                                       folder / "adaptation_curves.png")
    print(format_table(header, rows))
    return {"methods": table}
