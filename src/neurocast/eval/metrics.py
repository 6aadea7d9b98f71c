"""Metrics, each defined once and used by training, evaluation and benchmarks alike.

* :func:`masked_mse` - mean squared error over the observed entries (torch; every loss and
  adaptation step of the forecasters, the latent losses through :func:`masked_loss`).
* :func:`prediction_score` - POCO's headline: per session 1 - MSE_model / MSE_copy_last on
  the same windows, averaged with equal weight over sessions (0 = copy-last, 1 = perfect).
* :func:`stable_horizon` - first roll-out step whose normalised MSE exceeds 1 (the data's
  variance), or the horizon reached if never.
* :func:`variance_explained` - per neuron 1 - var(error) / var(true) over time.
* :func:`steps_to_fraction` - first adaptation step reaching a fraction of a reference gain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def elementwise_loss(name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-entry training loss: mse, huber (delta 1) or l1."""
    diff = pred - target
    if name == "mse":
        return diff * diff
    if name == "l1":
        return diff.abs()
    if name == "huber":
        a = diff.abs()
        return torch.where(a < 1.0, 0.5 * diff * diff, a - 0.5)
    raise ValueError(f"unknown loss function {name!r} (mse, huber, l1)")


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over entries where ``mask`` is true (all when None). NaN outside the mask is ignored."""
    if mask is None:
        return values.mean()
    values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return values.sum() / mask.sum().clamp_min(1)


def masked_loss(name: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean per-entry training loss (:func:`elementwise_loss`) over the entries where ``mask`` is true."""
    if mask is not None:  # unobserved targets may hold anything (NaN): never let them in
        target = torch.where(mask, target, pred.detach())
    return masked_mean(elementwise_loss(name, pred, target), mask)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
               per_unit: bool = False) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` is true (every entry when None), as a tensor
    (differentiable, twice for E2E-TTT). Targets outside the mask may hold anything, NaN included.

    ``mask``: bool, the shape of ``pred`` (or broadcastable to it). ``per_unit``: ``mask`` is the
    (B, D) unit mask of a (B, P, D) forecast (:class:`~neurocast.data.forecast_batch.ForecastBatch`'s
    ``unit_mask``) and applies at every one of the P steps: padded units never count.
    """
    if mask is not None:
        mask = (mask[:, None, :] if per_unit else mask).expand_as(pred)
    return masked_loss("mse", pred, target, mask)


def prediction_score(model_mse: Mapping[str, float], copy_mse: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """(mean over sessions, per-session scores) of 1 - MSE_model / MSE_copy_last."""
    per = {}
    for s, m in model_mse.items():
        c = copy_mse[s]
        per[s] = float(1.0 - m / c) if c > 0 else float("nan")
    vals = [v for v in per.values() if np.isfinite(v)]
    return (float(np.mean(vals)) if vals else float("nan")), per


def stable_horizon(normalised_mse: Sequence[float]) -> int:
    """First step (1-based) where the normalised MSE exceeds 1; len(curve) if it never does."""
    curve = np.asarray(normalised_mse, np.float64)
    bad = np.flatnonzero(~(curve <= 1.0))  # NaN counts as diverged
    return int(bad[0] + 1) if bad.size else int(curve.size)


def variance_explained(pred: np.ndarray | None = None, true: np.ndarray | None = None, *,
                       var_err: np.ndarray | None = None, var_true: np.ndarray | None = None) -> np.ndarray:
    """(N,) per neuron 1 - var_t(pred - true) / var_t(true); NaN where the true trace is constant.

    Give the traces ``pred`` and ``true`` (T, N), or the two variances (N,) when they were
    accumulated elsewhere (roll-outs average them over their starts): ``var_err`` and ``var_true``.
    """
    if pred is not None or true is not None:
        pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
        var_true = true.var(axis=0)
        var_err = (pred - true).var(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var_true > 0, 1.0 - var_err / var_true, np.nan)


def steps_to_fraction(curve: Sequence[float], reference_gain: float, fraction: float = 0.95) -> int | None:
    """First k with curve[k] - curve[0] >= fraction x reference_gain (None if never)."""
    c = np.asarray(curve, np.float64)
    if not np.isfinite(reference_gain) or reference_gain <= 0:
        return None
    hit = np.flatnonzero(c - c[0] >= fraction * reference_gain)
    return int(hit[0]) if hit.size else None


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (0 for a single value)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), 0.0
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half)
