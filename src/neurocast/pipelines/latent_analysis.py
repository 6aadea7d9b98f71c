"""`neurocast analyze RUN_DIR`: roll-out analysis of any saved epoch of a latent run.

Writes ``<run>/analysis/<label>/`` with ``metrics.json`` and figures, where the label is
``epoch_0025`` for ``--epoch 25`` (checkpoints/epoch_0025.pt), or best / final / latest.
With several epochs it also writes ``analysis/epochs.csv`` and ``epochs.md``: one row
per epoch, to see where cross-validation generalisation peaked.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from neurocast.checkpoints import load_checkpoint, load_model_state
from neurocast.devices import select_device
from neurocast.errors import RunError
from neurocast.eval.latent_eval import metrics_of, rollout_evaluation
from neurocast.progress import info
from neurocast.report import figures
from neurocast.report.tables import fmt, format_table, markdown_table
from neurocast.runs import RunDir, write_json
from neurocast.schema.latent import LatentExperiment

NAMED = ("best", "final", "latest", "best_early_stop")


def checkpoint_path(run: RunDir, epoch: int | str | None) -> tuple[Path, str]:
    """(checkpoint file, analysis label) for an epoch number or best/final/latest (default final)."""
    if epoch is None:
        epoch = "final" if (run.checkpoints / "final.pt").exists() else "latest"
    if isinstance(epoch, str) and epoch in NAMED:
        path = run.checkpoints / f"{epoch}.pt"
        label = epoch
    else:
        try:
            e = int(epoch)
        except (TypeError, ValueError):
            raise RunError(f"--epoch must be a number or one of {', '.join(NAMED)}, got {epoch!r}") from None
        path = run.checkpoints / f"epoch_{e:04d}.pt"
        label = f"epoch_{e:04d}"
    if not path.exists():
        have = sorted(p.name for p in run.checkpoints.glob("*.pt"))
        raise RunError(
            f"{run.path} has no checkpoint {path.name} (available: {', '.join(have) or 'none'}; "
            "periodic checkpoints follow training.save_checkpoint_every_n_epochs)"
        )
    return path, label


class LatentAnalysis:
    """Data and model of a latent run, rebuilt once; weights swapped per checkpoint."""

    def __init__(self, run_dir: str | Path, device: str | None = None):
        from neurocast.pipelines.latent import build, ensure_run_data

        self.run = RunDir.open(run_dir)
        data = self.run.read_config()
        if (data or {}).get("task") != "latent":
            raise RunError(f"{self.run.path} is not a latent-dynamics run (task {data.get('task')!r})")
        self.cfg = self.run.load_config()
        self.device = select_device(device or self.cfg.training.device)
        any_ckpt = next(iter(sorted(self.run.checkpoints.glob("*.pt"))), None)
        if any_ckpt is None:
            raise RunError(f"{self.run.path} has no checkpoints yet")
        fitted = load_checkpoint(any_ckpt)["task"]
        ensure_run_data(self.cfg, self.run)
        _, self.task = build(self.cfg, self.device, fitted=fitted)
        self.task.noise_shares = noise_shares(self.cfg, self.task)

    def load(self, epoch: int | str | None) -> tuple[str, dict[str, Any]]:
        path, label = checkpoint_path(self.run, epoch)
        state = load_checkpoint(path, map_location=self.device)
        load_model_state(self.task.model, state["model"], str(path))
        self.task.model.eval()
        return label, state

    def analyze(self, epoch: int | str | None, horizon: int | None = None, n_starts: int | None = None,
                figures_on: bool = True) -> tuple[Path, dict[str, Any]]:
        label, state = self.load(epoch)
        cfg = self.cfg
        h = horizon or cfg.rollout_horizon()
        info(f"analysing {label} (epoch {state['epoch']}) with {h}-step roll-outs")
        with torch.no_grad():
            val = self.task.validate(state["epoch"])
        ev = rollout_evaluation(self.task, h, n_starts or cfg.eval.n_starts, cfg.eval.seed,
                                tuple(cfg.eval.rollouts), trace_per_type=cfg.eval.trace_neurons_per_type)
        out = self.run.path / "analysis" / label
        out.mkdir(parents=True, exist_ok=True)
        metrics = {
            "run": str(self.run.path),
            "checkpoint": f"checkpoints/{label}.pt" if label in NAMED else f"checkpoints/{label}.pt",
            "epoch": int(state["epoch"]),
            "horizon": h,
            "time_units": cfg.training.time_units,
            "training_window": cfg.training.window,
            "validation": val,
            "rollouts": metrics_of(ev),
        }
        write_json(out / "metrics.json", metrics)
        if figures_on:
            self.figures(ev, out, label)
        return out, metrics

    def figures(self, ev: dict[str, dict[str, Any]], out: Path, label: str) -> list[Path]:
        tu, window = self.cfg.training.time_units, self.cfg.training.window
        made = []
        for name, e in ev.items():
            res = e["results"]
            if not res:
                continue
            slug = name.replace("/", "_")
            made.append(figures.rollout_mse(res, window, tu, f"{name}: roll-out MSE ({label})",
                                            out / f"rollout_mse_{slug}.png"))
            made.append(figures.rollout_mse_zoom(res, window, tu, f"{name}: first training windows ({label})",
                                                 out / f"rollout_zoom_{slug}.png"))
            r = res.get("latent") or next(iter(res.values()))
            made.append(figures.variance_scatter(
                r.var_true, r.var_err, e["cell_types"],
                f"{name}: per-neuron variance, {r.kind} roll-out of {r.horizon} steps ({label})",
                out / f"variance_{slug}.png"))
            labels = [
                (str(e["cell_types"][i]) if e["cell_types"] is not None else str(e["neuron_ids"][i]))
                for i in r.trace_neurons
            ]
            dt = self.task.train.rec.dt
            made.append(figures.traces(r.trace_true, r.trace_pred, labels, dt,
                                       f"{name}: {r.kind} roll-out from frame {r.trace_start} ({label})",
                                       out / f"traces_{slug}.png"))
        made.append(figures.training_curves(self.run.read_metrics(), out / "training_curves.png", self.cfg.name))
        return made

    def close(self) -> None:
        self.task.close()


def noise_shares(cfg: LatentExperiment, task) -> dict[str, float]:
    """Per evaluation set, the share of its variance due to process noise (simulated fly data: the
    dataset's diagnostics.json; recordings simulated without noise get none)."""
    from neurocast.sim.fly_simulation import read_diagnostics

    if cfg.data.path is None:
        return {}
    diag = read_diagnostics(cfg.data.path)
    share = None if diag is None else diag.get("noise_variance_share")
    if not share:
        return {}
    out = {}
    for es in task.evalsets:
        if float((es.windows.rec.provenance or {}).get("noise_std") or 0) > 0:
            out[es.name] = float(share)
    return out


def epochs_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per analysed epoch: validation loss and latent roll-out metrics per set."""
    sets = sorted({s for r in rows for s in r["rollouts"]})
    header = ["epoch", "val/loss"]
    for s in sets:
        header += [f"{s} stable horizon", f"{s} MSE in window", f"{s} MSE beyond"]
    table = []
    for r in rows:
        line = [str(r["epoch"]), fmt(r["validation"].get("val/loss"))]
        for s in sets:
            lat = r["rollouts"].get(s, {}).get("latent", {})
            line += [fmt(lat.get("stable_horizon")), fmt(lat.get("mse_within_training_window")),
                     fmt(lat.get("mse_beyond_training_window"))]
        table.append(line)
    return header, table


def analyze_run(run_dir: str | Path, epochs: list[int | str] | None, horizon: int | None = None,
                n_starts: int | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """Analyse one or several epochs; returns (folder written last or the table's folder, metrics)."""
    an = LatentAnalysis(run_dir)
    try:
        results = []
        last = None
        for e in epochs or [None]:
            last, m = an.analyze(e, horizon, n_starts)
            results.append(m)
        if epochs and len(epochs) > 1:
            header, table = epochs_table(results)
            folder = an.run.path / "analysis"
            with open(folder / "epochs.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(header)
                w.writerows(table)
            (folder / "epochs.md").write_text(markdown_table(header, table) + "\n")
            print(format_table(header, table))
            return folder, results
        return last, results
    finally:
        an.close()


def analyze_command(run_dir: str | Path, epochs: list[int | str] | None, horizon: int | None = None,
                    n_starts: int | None = None) -> Path:
    """`neurocast analyze` of a latent run: :func:`analyze_run`, with the metrics table of a single epoch printed."""
    folder, results = analyze_run(run_dir, epochs, horizon, n_starts)
    if len(results) == 1:
        print_metrics(results[0])
    return folder


def summarize_metrics(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """A table of the roll-out metrics of one analysis (one row per set and roll-out kind), global MSE,
    with the best observation-constrained linear baseline beside the model."""
    header = ["dataset", "roll-out", "stable horizon", "MSE in window", "best linear in window",
              "constant in window", "MSE between obs.", "MSE beyond window", "best linear beyond"]
    rows = []
    for name, sets in metrics["rollouts"].items():
        for kind in ("latent", "activity"):
            s = sets.get(kind)
            if not s:
                continue
            best = (s.get("best_linear") or {}).get("mse", {})
            rows.append([
                name, kind, f"{s['stable_horizon']}/{s['horizon']}", fmt(s["mse_within_training_window"]),
                _best(best.get("within_training_window")), fmt(s["constant_mse_within_training_window"]),
                fmt(s["mse_between_observation_points"]), fmt(s["mse_beyond_training_window"]),
                _best(best.get("beyond_training_window")),
            ])
    return header, rows


SHORT = {"stimulus_ridge": "stim", "pca_lds": "LDS"}


def _best(entry: dict | None) -> str:
    return "-" if not entry else f"{fmt(entry['baseline_value'])} ({SHORT.get(entry['baseline'], entry['baseline'])})"


BASELINE_ROWS = (
    ("model", "model (latent roll-out)"),
    ("stimulus_ridge", "stimulus-only ridge"),
    ("pca_lds", "linear dynamics, PCA latent"),
    ("from_mean", "model started from the training mean"),
    ("constant", "constant (training mean)"),
    ("interpolation", "interpolation of observations (oracle)"),
)
TABLE_SEGMENTS = (("within_training_window", "in window"), ("between_observation_points", "between obs."),
                  ("beyond_training_window", "beyond window"))


def baseline_table(rollout: dict[str, Any],
                   metric: str = "per_neuron_without_inputs") -> tuple[list[str], list[list[str]]]:
    """Model vs every baseline for one set's latent roll-out summary: one row per predictor, one
    column per segment; ``metric``: per_neuron_without_inputs, per_neuron or mse (global)."""
    header = ["predictor"] + [label for _, label in TABLE_SEGMENTS]
    rows = []
    for key, label in BASELINE_ROWS:
        if key == "model":
            vals = rollout.get(metric) if metric != "mse" else {g: rollout.get(f"mse_{g}") for g, _ in TABLE_SEGMENTS}
        else:
            b = (rollout.get("baselines") or {}).get(key)
            if b is None:
                continue
            vals = b[metric]
        rows.append([label] + [fmt((vals or {}).get(g)) for g, _ in TABLE_SEGMENTS])
    return header, rows


def verdict(name: str, rollout: dict[str, Any], metric: str = "per_neuron_without_inputs") -> str:
    """A plain sentence: does the model beat the best linear baseline, in and beyond the window?"""
    best = (rollout.get("best_linear") or {}).get(metric)
    if not best:
        return f"- **{name}**: no linear baseline was fitted (no stimulus)."
    parts = []
    for g, label in (("within_training_window", "inside the training window"), ("beyond_training_window", "beyond it")):
        e = best.get(g)
        if not e or e["model"] is None:
            continue
        r = e["ratio"]
        word = "beats" if r < 1 else "does NOT beat"
        parts.append(f"{label} it {word} the best linear baseline ({SHORT.get(e['baseline'], e['baseline'])}): "
                     f"{fmt(e['model'])} vs {fmt(e['baseline_value'])} "
                     f"({'%.0f%% lower' % (100 * (1 - r)) if r < 1 else '%.0f%% higher' % (100 * (r - 1))})")
    return f"- **{name}**: " + "; ".join(parts) + "."


def print_metrics(metrics: dict[str, Any]) -> None:
    header, rows = summarize_metrics(metrics)
    print(format_table(header, rows))
    print(json.dumps({"epoch": metrics["epoch"], "horizon": metrics["horizon"]}))
