"""Figures (matplotlib, Agg backend, PNG). Every function takes arrays and a path; none
knows about runs or checkpoints. Axes are always labelled."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _log_axes(ax, xlabel: str, ylabel: str, title: str, legend_loc: str = "best", xlog: bool = False) -> None:
    """Log-scale axes with labels, title, a small legend and a light grid (every MSE figure)."""
    if xlog:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc=legend_loc)
    ax.grid(alpha=0.3, which="both")


def _save(fig, path: str | Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout(rect=(0, 0, 1, 0.97) if fig._suptitle is not None else (0, 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def type_colors(names: Sequence[str]) -> dict[str, Any]:
    cmaps = [plt.get_cmap(c) for c in ("tab20", "tab20b", "tab20c", "Set3")]
    palette = [cm(i) for cm in cmaps for i in range(cm.N)]
    return {n: palette[i % len(palette)] for i, n in enumerate(sorted(names))}


# ---------------------------------------------------------------------------- latent roll-outs


def rollout_mse(results: dict, window: int, time_units: int, title: str, path: str | Path) -> Path:
    """MSE against roll-out step (log y) for each roll-out kind, with the baselines."""
    fig, ax = plt.subplots(figsize=(10.5, 4.5))
    colors = {"latent": "tab:orange", "activity": "tab:blue"}
    steps = None
    for kind, r in results.items():
        steps = np.arange(1, r.horizon + 1)
        ax.plot(steps, r.curve, color=colors.get(kind), lw=1.3,
                label=f"{kind} roll-out (mean of {r.starts.size} starts)")
        if kind == "latent":
            ax.fill_between(steps, np.percentile(r.mse, 10, axis=0), np.percentile(r.mse, 90, axis=0),
                            color=colors.get(kind), alpha=0.15, lw=0, label="latent: 10-90% of starts")
    if steps is not None:
        r = results.get("latent") or next(iter(results.values()))
        ax.plot(steps, r.constant.mean(0), "k--", lw=1, label="constant (training mean)")
        _linear_baselines(ax, r, steps)
        if r.interpolation is not None:
            # averaged over each observation interval (it is 0 at the observations themselves)
            ic = r.interpolation.mean(0)
            n = ic.size // time_units * time_units
            if n:
                per = np.repeat(ic[:n].reshape(-1, time_units).mean(1), time_units)
                ax.plot(steps[:n], per, color="gray", ls=":", lw=1.2,
                        label=f"linear interpolation of observations every {time_units} (interval mean)")
        ax.axhline(r.data_variance, color="red", lw=0.8, alpha=0.6, label="data variance (stable-horizon limit)")
        if r.noise_floor:
            ax.axhline(r.noise_floor, color="purple", lw=0.8, ls="-.", alpha=0.7, label="process-noise floor")
    ax.axvline(window, color="green", lw=1, alpha=0.7, label=f"training window ({window} steps)")
    _log_axes(ax, "steps since roll-out start", "MSE (normalised units)", title, "lower right")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


BASELINE_STYLE = {
    "stimulus_ridge": ("tab:green", "-", "stimulus-only ridge"),
    "pca_lds": ("tab:purple", "-", "linear dynamics in PCA latent"),
    "from_mean": ("tab:brown", "--", "latent roll-out from the training mean (memory ablation)"),
}


def _linear_baselines(ax, r, steps: np.ndarray, n: int | None = None) -> None:
    """The fitted baselines and the initial-state ablation of a roll-out result, if present."""
    for key, (color, ls, label) in BASELINE_STYLE.items():
        c = getattr(r, "curves", {}).get(key)
        if c is not None:
            ax.plot(steps[:n], c.mean(0)[:n], color=color, ls=ls, lw=1.0, alpha=0.85, label=label)


def rollout_mse_zoom(results: dict, window: int, time_units: int, title: str, path: str | Path) -> Path:
    """The first training window in detail, with markers at the observation points."""
    fig, ax = plt.subplots(figsize=(10.5, 4.5))
    colors = {"latent": "tab:orange", "activity": "tab:blue"}
    n = min(window * 2, next(iter(results.values())).horizon)
    steps = np.arange(1, n + 1)
    obs = steps % time_units == 0
    for kind, r in results.items():
        c = r.curve[:n]
        ax.plot(steps, c, color=colors.get(kind), lw=1.5, label=f"{kind} roll-out")
        ax.plot(steps[obs], c[obs], "o", color=colors.get(kind), ms=4)
    r = results.get("latent") or next(iter(results.values()))
    ax.plot(steps, r.constant.mean(0)[:n], "k--", lw=1, label="constant (training mean)")
    _linear_baselines(ax, r, steps, n)
    if r.interpolation is not None:
        ax.plot(steps, r.interpolation.mean(0)[:n], color="gray", ls=":", lw=1.2, label="linear interpolation")
    if r.noise_floor:
        ax.axhline(r.noise_floor, color="purple", lw=0.8, ls="-.", alpha=0.7, label="process-noise floor")
    ax.axvline(window, color="green", lw=1, alpha=0.7, label="end of training window")
    _log_axes(ax, "steps since roll-out start (markers: observation points)", "MSE (normalised units)", title)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def variance_scatter(var_true: np.ndarray, var_err: np.ndarray, cell_types: np.ndarray | None, title: str,
                     path: str | Path) -> Path:
    """Per neuron: total variance (x) vs unexplained variance (y), coloured by cell type."""
    fig, ax = plt.subplots(figsize=(7.5, 7))
    ok = (var_true > 0) & (var_err > 0) & np.isfinite(var_true) & np.isfinite(var_err)
    if cell_types is None:
        ax.scatter(var_true[ok], var_err[ok], s=6, alpha=0.6)
    else:
        names = sorted(set(cell_types.tolist()))
        colors = type_colors(names)
        for t in names:
            sel = ok & (cell_types == t)
            if not sel.any():
                continue
            ax.scatter(var_true[sel], var_err[sel], s=6, alpha=0.6, color=colors[t])
            cx, cy = np.exp(np.log(var_true[sel]).mean()), np.exp(np.log(var_err[sel]).mean())
            ax.annotate(t, (cx, cy), fontsize=6, color=colors[t], ha="center", va="center",
                        bbox=dict(boxstyle="round,pad=0.1", fc="white", ec=colors[t], alpha=0.7, lw=0.5))
    lo = float(np.nanmin(np.concatenate([var_true[ok], var_err[ok]]))) if ok.any() else 1e-6
    hi = float(np.nanmax(np.concatenate([var_true[ok], var_err[ok]]))) if ok.any() else 1.0
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="unexplained = total (no better than the mean)")
    _log_axes(ax, "total variance of the true trace", "unexplained variance (variance of the roll-out error)", title,
              "upper left", xlog=True)
    return _save(fig, path)


def traces(true: np.ndarray, pred: np.ndarray, labels: Sequence[str], dt: float, title: str, path: str | Path,
           cols: int = 4) -> Path:
    """True (black) vs predicted (orange) traces, one panel per neuron, with R^2 in each title."""
    k = true.shape[1]
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 1.6 * rows + 0.9), sharex=True, squeeze=False)
    t = np.arange(1, true.shape[0] + 1) * dt
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= k:
            ax.axis("off")
            continue
        ax.plot(t, true[:, i], color="black", lw=0.8)
        ax.plot(t, pred[:, i], color="tab:orange", lw=0.8)
        var = true[:, i].var()
        r2 = 1 - (pred[:, i] - true[:, i]).var() / var if var > 0 else float("nan")
        ax.set_title(f"{labels[i]}  R²={r2:.2f}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title + "\n(black: true, orange: roll-out)", fontsize=9)
    fig.supxlabel("time since the roll-out start (s)", fontsize=8)
    fig.supylabel("activity (normalised units)", fontsize=8)
    # many panels: a fixed layout (tight_layout costs seconds per figure here)
    height = 1.6 * rows + 0.9
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.7 / height, top=1 - 0.75 / height, wspace=0.25, hspace=0.6)
    return _save(fig, path, tight=False)


def training_curves(records: list[dict[str, Any]], path: str | Path, title: str = "training") -> Path:
    """Training losses and validation losses against epoch, from metrics.jsonl records."""
    recs = [r for r in records if "epoch" in r and any(k.startswith("train/") for k in r)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ep = [r["epoch"] for r in recs]
    for key in ("train/total", "train/recon", "train/evolve", "train/aug", "train/reg"):
        vals = [r.get(key) for r in recs]
        if any(v not in (None, 0) for v in vals):
            axes[0].plot(ep, [v if v else np.nan for v in vals], label=key.split("/", 1)[1])
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss")
    axes[0].set_title("training loss components")
    axes[0].legend(fontsize=7)
    val_keys = [k for k in (recs[-1] if recs else {}) if k.endswith("/loss") and not k.startswith("train/")]
    for key in val_keys:
        axes[1].plot(ep, [r.get(key, np.nan) for r in recs], label=key)
        base = key.replace("/loss", "/mean_baseline")
        if recs and base in recs[-1]:
            axes[1].plot(ep, [r.get(base, np.nan) for r in recs], ls="--", lw=0.8, label=base)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("MSE at loss multiples (normalised)")
    axes[1].set_title("validation (dashed: constant-mean baseline)")
    axes[1].legend(fontsize=6)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------------------- fly realism


def dsi_tuning(ds: dict, title: str, path: str | Path) -> Path:
    """Polar tuning curves (peak rectified voltage vs edge direction) of T4a-d (ON) and T5a-d (OFF)."""
    angles = np.deg2rad(np.asarray(ds["angles_deg"] + ds["angles_deg"][:1]))
    names = list(ds["types"])
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4), subplot_kw={"projection": "polar"})
    for ax, name in zip(axes.ravel(), names):
        t = ds["types"][name]
        for pol, color in (("on", "tab:orange"), ("off", "tab:blue")):
            r = np.asarray(t[f"tuning_{pol}"] + t[f"tuning_{pol}"][:1])
            ax.plot(angles, r, color=color, lw=1.4 if pol == t["preferred_contrast"] else 0.8,
                    label=f"{pol.upper()} edges (DSI {t[f'dsi_{pol}']:.2f})")
        ax.set_title(f"{name}", fontsize=10, pad=12)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower center", bbox_to_anchor=(0.5, -0.35))
    fig.suptitle(f"{title}\npeak rectified voltage of the central cell vs edge direction (deg)", fontsize=10)
    return _save(fig, path)
