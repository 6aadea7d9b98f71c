"""Forecasting figures: per-horizon error, forecast traces, score per session, adaptation curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from neurocast.report.figures import _save, plt


def per_horizon_error(per_session: dict[str, Any], dataset_names: list[str], title: str, path: str | Path) -> Path:
    """MSE against steps ahead for the model and the copy-last / mean baselines, one panel per dataset."""
    rows = {k: v for k, v in per_session.items() if not k.startswith("_")}
    ds = [d for d in range(len(dataset_names)) if any(v["dataset"] == d for v in rows.values())]
    fig, axes = plt.subplots(1, len(ds), figsize=(5 * len(ds), 3.8), squeeze=False)
    for ax, d in zip(axes[0], ds):
        sess = [v for v in rows.values() if v["dataset"] == d]
        w = np.array([v["count"] for v in sess], dtype=float)
        for key, label, style in (("mse_per_step", "model", "-"), ("copy_mse_per_step", "copy last", "--"),
                                  ("mean_mse_per_step", "mean", ":")):
            curve = np.average(np.array([v[key] for v in sess]), axis=0, weights=w)
            ax.plot(np.arange(1, curve.size + 1), curve, style, label=label)
        ax.set_xlabel("steps ahead")
        ax.set_ylabel("MSE (z-scored units)")
        ax.set_title(dataset_names[d])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def forecast_traces(context: np.ndarray, target: np.ndarray, prediction: np.ndarray, units: list[int], dt: float,
                    title: str, path: str | Path) -> Path:
    """Context (grey), truth (black) and forecast (orange) of a few units of one window."""
    k = len(units)
    fig, axes = plt.subplots(k, 1, figsize=(8, 1.5 * k + 0.8), sharex=True, squeeze=False)
    C, P = context.shape[0], target.shape[0]
    tc = (np.arange(C) - C) * dt
    tp = np.arange(P) * dt
    for ax, u in zip(axes[:, 0], units):
        ax.plot(tc, context[:, u], color="gray", lw=1)
        ax.plot(tp, target[:, u], color="black", lw=1.2)
        ax.plot(tp, prediction[:, u], color="tab:orange", lw=1.2)
        ax.axvline(0, color="k", lw=0.5, ls="--")
        ax.set_ylabel(f"unit {u}", fontsize=8)
    fig.supxlabel("time relative to the forecast start (s)")
    fig.supylabel("activity (z-scored)")
    fig.suptitle(title + "  (grey: context, black: truth, orange: forecast)", fontsize=9)
    return _save(fig, path)


def session_scores(scores: dict[str, float], title: str, path: str | Path) -> Path:
    names = list(scores)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 4))
    vals = [scores[n] for n in names]
    ax.bar(range(len(names)), vals, color=["tab:green" if v > 0 else "tab:red" for v in vals])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("session")
    ax.set_ylabel("prediction score (1 - MSE / MSE copy-last)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def adaptation_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: str | Path,
                      xlabel: str = "adaptation steps") -> Path:
    """Score against adaptation steps: {label: (steps, mean score[, half-width])}."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, val in curves.items():
        steps, mean = val[0], val[1]
        ax.plot(steps, mean, label=label, lw=1.5)
        if len(val) > 2 and val[2] is not None:
            ax.fill_between(steps, mean - val[2], mean + val[2], alpha=0.15)
    ax.axhline(0, color="k", lw=0.6, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("prediction score on held-out query data")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
