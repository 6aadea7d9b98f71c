"""`neurocast summarize DIR`: one table of every run below DIR.

Runs are folders with a ``config.yaml``; runs nested in another run (seeds of a
forecasting run, methods of a comparison) are represented by their parent. The table
shows only the hyperparameters whose values differ between runs, and the key metrics:

* latent: best and final validation loss, best epoch, and (if analysed) the stable
  horizon and roll-out MSE of the latent roll-out on every evaluated set;
* forecasting: test score (mean over seeds), MSE and MAE per dataset;
* any run: status.

It also writes ``summary.csv`` and ``summary_plots.png`` (each metric against each varied
hyperparameter) into DIR.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml

from neurocast.errors import RunError
from neurocast.report.tables import fmt, format_table

IGNORED = ("runs_dir", "name", "description", "logging", "data.path", "data.datasets")


def find_runs(root: Path) -> list[Path]:
    runs = sorted(p.parent for p in root.rglob("config.yaml"))
    out: list[Path] = []
    for r in runs:
        if any(r != o and o in r.parents for o in runs):
            continue  # inside another run (seeds/, methods/, models/)
        if ".failed-" in r.name:
            continue
        out.append(r)
    return out


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = json.dumps(d) if isinstance(d, list) else d
    return out


def metrics_of(run: Path) -> dict[str, Any]:
    summ = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    status = (run / "status").read_text().strip() if (run / "status").exists() else "?"
    m: dict[str, Any] = {"status": status}
    if summ.get("task") == "latent":
        m["best_val_loss"] = summ.get("best_val_loss")
        m["final_val_loss"] = summ.get("final_val_loss")
        m["best_epoch"] = summ.get("best_epoch")
        ana = sorted((run / "analysis").glob("*/metrics.json")) if (run / "analysis").exists() else []
        final = [a for a in ana if a.parent.name == "final"] or ana[-1:]
        if final:
            am = json.loads(final[0].read_text())
            for name, sets in am.get("rollouts", {}).items():
                lat = sets.get("latent")
                if lat:
                    m[f"{name}/stable_horizon"] = lat.get("stable_horizon")
                    m[f"{name}/rollout_mse"] = lat.get("mse_overall")
    elif summ.get("task") in ("forecast", "forecast_compare"):
        groups = summ.get("models") or {summ.get("experiment", "model"): summ}
        for label, g in groups.items():
            prefix = "" if len(groups) == 1 else f"{label}/"
            for ds, d in g.get("datasets", {}).items():
                if isinstance(d, dict) and "score" in d:
                    m[f"{prefix}{ds}/test_score"] = d["score"]["mean"]
                    m[f"{prefix}{ds}/test_mse"] = d["mse"]["mean"]
    elif summ.get("task") == "ttt_compare":
        for method, budgets in summ.get("methods", {}).items():
            for b, e in budgets.items():
                m[f"{method}/{b}/adapted_score"] = e["adapted"]["mean"]
                m[f"{method}/{b}/gain"] = e["gain"]["mean"]
                m[f"{method}/{b}/steps_to_95"] = e["steps_to_95"]
    return m


def collect(root: str | Path) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise RunError(f"{root} is not a folder")
    runs = find_runs(root)
    if not runs:
        raise RunError(f"no run directories (with config.yaml) below {root}")
    rows = []
    for r in runs:
        cfg = flatten(yaml.safe_load((r / "config.yaml").read_text()) or {})
        rows.append({"run": str(r.relative_to(root)) if r != root else r.name, "config": cfg, "metrics": metrics_of(r)})
    keys = sorted({k for row in rows for k in row["config"]})
    varied = [k for k in keys if not k.startswith(IGNORED)
              and len({json.dumps(row["config"].get(k), default=str) for row in rows}) > 1]
    metric_keys = sorted({k for row in rows for k in row["metrics"]}, key=lambda k: (k != "status", k))
    return varied, metric_keys, rows


def summarize(root: str | Path, as_json: bool = False, sort: str | None = None) -> list[dict[str, Any]]:
    varied, metric_keys, rows = collect(root)
    table = [{"run": r["run"], **{k: r["config"].get(k) for k in varied}, **r["metrics"]} for r in rows]
    if sort is not None:
        if not any(sort in t for t in table):
            raise RunError(f"--sort {sort!r} is not a column ({', '.join(['run', *varied, *metric_keys])})")

        def key(t):
            v = t.get(sort)
            return (v is None or (isinstance(v, float) and math.isnan(v)), v if isinstance(v, (int, float)) else str(v))

        table.sort(key=key)
    columns = ["run", *varied, *metric_keys]
    root = Path(root).expanduser()
    with open(root / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for t in table:
            w.writerow([t.get(c) for c in columns])
    plot(table, varied, [m for m in metric_keys if m != "status"], root / "summary_plots.png")
    if as_json:
        print(json.dumps({"varied": varied, "metrics": metric_keys, "runs": table}, indent=2, default=str))
    else:
        print(format_table(columns, [[fmt(t.get(c)) if not isinstance(t.get(c), str) else t.get(c) for c in columns]
                                     for t in table]))
    return table


def plot(table: list[dict[str, Any]], varied: list[str], metrics: list[str], path: Path) -> Path | None:
    """Each numeric metric against each varied hyperparameter (one panel per pair)."""
    from neurocast.report.figures import _save, plt

    metrics = [m for m in metrics if any(isinstance(t.get(m), (int, float)) for t in table)]
    if not varied or not metrics:
        return None
    fig, axes = plt.subplots(len(metrics), len(varied), figsize=(3.6 * len(varied), 2.8 * len(metrics)), squeeze=False)
    for i, m in enumerate(metrics):
        for j, h in enumerate(varied):
            ax = axes[i][j]
            xs = [t.get(h) for t in table]
            ys = [t.get(m) for t in table]
            pts = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float)) and y is not None]
            if pts:
                labels = sorted({str(x) for x, _ in pts}, key=lambda s: (len(s), s))
                pos = {lab: k for k, lab in enumerate(labels)}
                ax.scatter([pos[str(x)] for x, _ in pts], [y for _, y in pts], s=18)
                ax.set_xticks(range(len(labels)))
                ax.set_xticklabels(labels, rotation=30, fontsize=7)
            ax.set_xlabel(h, fontsize=7)
            ax.set_ylabel(m, fontsize=7)
            ax.grid(alpha=0.3)
    return _save(fig, path)
