"""`neurocast summarize DIR`: one table of every run below DIR.

Runs are folders with a ``config.yaml``; runs nested in another run (seeds of a
forecasting run, methods of a comparison) are represented by their parent. The table
shows only the hyperparameters whose values differ between runs, and the key metrics:

* latent: best and final validation loss, best epoch, and (if analysed) the stable
  horizon and roll-out MSE of the latent roll-out on every evaluated set;
* forecasting: test score and MSE (mean over seeds) per dataset, and the normalisation
  protocol (``whole_recording (LEAKING)`` for the published POCO protocol);
* adaptation comparisons: per method and budget the adapted score, the gain and steps-to-95%;
* any run: status.

Each task's metrics are its ``summary_row`` in the task registry (:mod:`neurocast.tasks`).

It also writes ``summary.csv`` and ``summary_plots.png`` (each metric against each varied
hyperparameter) into DIR. A run whose config.yaml or summary.json is damaged is skipped
with a warning naming the file; one bad file never hides the other runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from neurocast.errors import RunError
from neurocast.progress import warn
from neurocast.report.tables import fmt, format_table
from neurocast.runs import RunDir, read_json, read_yaml_mapping
from neurocast.tasks import task_spec

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
    """The status and key metrics of one run: its task's summary row (see neurocast.tasks)."""
    summ = read_json(run / "summary.json", "run summary") if (run / "summary.json").exists() else {}
    if not isinstance(summ, dict):
        raise RunError(f"run summary {run / 'summary.json'} is damaged (not a JSON object)")
    m: dict[str, Any] = {"status": RunDir(run).live_status or "?"}
    spec = task_spec(summ.get("task"))
    if spec is not None and spec.summary_row is not None:
        m.update(spec.get("summary_row")(run, summ))
    return m


def _protocol(summ: dict[str, Any]) -> dict[str, Any]:
    """The normalisation protocol of a forecasting run (``whole_recording (LEAKING)`` for the published one)."""
    proto = summ.get("protocol") or {}
    fit = proto.get("normalization_fit", "train")
    return {"normalization_fit": f"{fit} (LEAKING)" if proto.get("leaking") else fit}


def latent_row(run: Path, summ: dict[str, Any]) -> dict[str, Any]:
    """Best and final validation loss, best epoch and, if analysed, the latent roll-out of every set:
    stable horizon, MSE, per-neuron MSE without the input cells and its ratio to the best linear baseline."""
    m: dict[str, Any] = {"best_val_loss": summ.get("best_val_loss"), "final_val_loss": summ.get("final_val_loss"),
                         "best_epoch": summ.get("best_epoch")}
    ana = sorted((run / "analysis").glob("*/metrics.json")) if (run / "analysis").exists() else []
    final = [a for a in ana if a.parent.name == "final"] or ana[-1:]
    try:
        am = read_json(final[0], "analysis") if final else {}
    except RunError as exc:
        warn(f"warning: ignoring the analysis of {run}: {exc}")
        am = {}
    if final:
        for name, sets in am.get("rollouts", {}).items():
            lat = sets.get("latent")
            if lat:
                m[f"{name}/stable_horizon"] = lat.get("stable_horizon")
                m[f"{name}/rollout_mse"] = lat.get("mse_overall")
                best = (lat.get("best_linear") or {}).get("per_neuron_without_inputs", {})
                for seg, short in (("within_training_window", "in"), ("beyond_training_window", "beyond")):
                    e = best.get(seg)
                    if e:  # per-neuron MSE without the input cells, and its ratio to the best linear baseline
                        m[f"{name}/pn_{short}"] = e["model"]
                        m[f"{name}/pn_{short}_vs_linear"] = e["ratio"]
    return m


def forecast_row(run: Path, summ: dict[str, Any]) -> dict[str, Any]:
    """The normalisation protocol and the test score and MSE (mean over seeds) per dataset (and model)."""
    m = _protocol(summ)
    groups = summ.get("models") or {summ.get("experiment", "model"): summ}
    for label, g in groups.items():
        prefix = "" if len(groups) == 1 else f"{label}/"
        for ds, d in g.get("datasets", {}).items():
            if isinstance(d, dict) and "score" in d:
                m[f"{prefix}{ds}/test_score"] = d["score"]["mean"]
                m[f"{prefix}{ds}/test_mse"] = d["mse"]["mean"]
    return m


def ttt_compare_row(run: Path, summ: dict[str, Any]) -> dict[str, Any]:
    """The normalisation protocol and, per method and budget, the adapted score, the gain and steps-to-95%."""
    m = _protocol(summ)
    for method, budgets in summ.get("methods", {}).items():
        for b, e in budgets.items():
            m[f"{method}/{b}/adapted_score"] = e["adapted"]["mean"]
            m[f"{method}/{b}/gain"] = e["gain"]["mean"]
            m[f"{method}/{b}/steps_to_95"] = e["steps_to_95"]
    return m


def diverged(run: Path) -> bool:
    """Whether a failed run stopped on a non-finite loss (its metrics.jsonl logs the event)."""
    p = run / "metrics.jsonl"
    try:
        return p.exists() and '"event": "diverged"' in p.read_text()
    except OSError:
        return False


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest unique trailing part (training.unconnected_to_zero.num_neurons ->
    num_neurons unless another key ends the same)."""
    out = {}
    for k in keys:
        parts = k.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if sum(1 for o in keys if o == cand or o.endswith("." + cand)) == 1:
                out[k] = cand
                break
        else:
            out[k] = k
    return out


def collect(root: str | Path) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """(varied hyperparameters, metric columns, one row per run) of every run below ``root``; runs whose
    files are damaged are skipped with a warning."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise RunError(f"{root} is not a folder")
    runs = find_runs(root)
    if not runs:
        raise RunError(f"no run directories (with config.yaml) below {root}")
    rows = []
    for r in runs:
        try:
            cfg = flatten(read_yaml_mapping(r / "config.yaml", "run config"))
            metrics = metrics_of(r)
        except RunError as exc:
            warn(f"warning: skipping {r}: {exc}")
            continue
        rows.append({"run": str(r.relative_to(root)) if r != root else r.name, "config": cfg, "metrics": metrics})
    if not rows:
        raise RunError(f"no readable run directories below {root} (every one was skipped, see the warnings)")
    keys = sorted({k for row in rows for k in row["config"]})
    varied = [k for k in keys if not k.startswith(IGNORED)
              and len({json.dumps(row["config"].get(k), default=str) for row in rows}) > 1]
    metric_keys = sorted({k for row in rows for k in row["metrics"]}, key=lambda k: (k != "status", k))
    return varied, metric_keys, rows


def summarize(root: str | Path, as_json: bool = False, sort: str | None = None) -> list[dict[str, Any]]:
    """Print the table of every run below ``root`` (or JSON with ``as_json``, sorted by the column ``sort``),
    write ``summary.csv`` and ``summary_plots.png`` into it; returns the rows."""
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
    for t in table:  # a failed run that stopped on a non-finite loss says so
        if t.get("status") == "failed" and diverged(Path(root).expanduser() / t["run"]):
            t["status"] = "diverged"
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
        print(readable_table(table, varied, metric_keys))
    return table


def readable_table(table: list[dict[str, Any]], varied: list[str], metric_keys: list[str],
                   width: int | None = None) -> str:
    """The table as is when it fits the terminal; otherwise with short column names, split into
    blocks that fit (each block repeats the run column), the long names listed under it."""
    import shutil
    import sys

    wrap = width is not None or sys.stdout.isatty() or "COLUMNS" in os.environ  # a file or pipe gets whole lines
    width = width or shutil.get_terminal_size((160, 40)).columns
    columns = [*varied, *metric_keys]
    cells = {c: [t.get(c) if isinstance(t.get(c), str) else fmt(t.get(c)) for t in table] for c in ["run", *columns]}
    full = format_table(["run", *columns], [[cells[c][i] for c in ["run", *columns]] for i in range(len(table))])
    if not wrap or max(len(line) for line in full.splitlines()) <= width:
        return full
    names = short_names(varied)
    short = {**names, **{m: m.replace("cv/", "") for m in metric_keys}}
    run_w = max(len("run"), *(len(x) for x in cells["run"]))
    blocks, block, used = [], [], run_w
    for c in columns:
        w = max(len(short[c]), *(len(x) for x in cells[c])) + 2
        if block and used + w > width:
            blocks.append(block)
            block, used = [], run_w
        block.append(c)
        used += w
    if block or not blocks:
        blocks.append(block)
    out = []
    for b in blocks:
        out.append(format_table(["run", *(short[c] for c in b)],
                                [[cells["run"][i], *(cells[c][i] for c in b)] for i in range(len(table))]))
    legend = [f"  {short[k]} = {k}" for k in varied if short[k] != k]
    if legend:
        out.append("columns:\n" + "\n".join(legend))
    return "\n\n".join(out)


def is_grid(table: list[dict[str, Any]], varied: list[str]) -> bool:
    """Whether the runs are a grid over the varied hyperparameters (every combination, once or per seed)."""
    combos = {tuple(json.dumps(t.get(k), default=str) for k in varied) for t in table}
    size = 1
    for k in varied:
        size *= len({json.dumps(t.get(k), default=str) for t in table})
    return len(varied) <= 3 and size == len(combos)


def plot(table: list[dict[str, Any]], varied: list[str], metrics: list[str], path: Path) -> Path | None:
    """Each numeric metric against each varied hyperparameter (one panel per pair) when the runs
    form a grid; otherwise one panel per metric with a bar per run."""
    from neurocast.report.figures import _save, plt

    metrics = [m for m in metrics if any(isinstance(t.get(m), (int, float)) for t in table)]
    if not metrics:
        return None
    if not varied or not is_grid(table, varied):
        return bar_plot(table, metrics, path)
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


def bar_plot(table: list[dict[str, Any]], metrics: list[str], path: Path) -> Path:
    """One panel per metric, one bar per run (runs that do not form a grid of hyperparameters)."""
    from neurocast.report.figures import _save, plt

    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    names = [t["run"] if len(t["run"]) <= 28 else "..." + t["run"][-25:] for t in table]
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.5, 0.35 * len(table) + 2) * cols, 3.2 * rows), squeeze=False)
    for i, m in enumerate(metrics):
        ax = axes[i // cols][i % cols]
        ys = [t.get(m) if isinstance(t.get(m), (int, float)) else float("nan") for t in table]
        ax.bar(range(len(ys)), ys, color="tab:blue")
        ax.set_xticks(range(len(ys)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
        ax.set_ylabel(m, fontsize=7)
        ax.set_xlabel("run", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    for j in range(len(metrics), rows * cols):
        axes[j // cols][j % cols].axis("off")
    return _save(fig, path)
