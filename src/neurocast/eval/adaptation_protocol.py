"""The test-time adaptation protocol: adaptation curves beside their baselines, on the same windows.

For every held-out session and support budget (windows or seconds from the start of the
session's training part), with one set of query windows (later validation/test windows,
never seen during adaptation) shared by everything below:

* **zero-shot, mean init**: the model with the new session's embeddings set to the mean
  of the trained ones;
* **zero-shot, own init**: the same with the method's initialisation (the meta-learned
  one for FOMAML / E2E-TTT models; the mean for standard ones);
* **the adaptation curve**: the score after k = 0..``steps`` adaptation steps
  (:func:`neurocast.eval.adaptation.adapt_session`), its early-stopped score where a
  held-back slice of the support exists, and the score after ``long_steps`` of long
  fine-tuning (the reference of steps-to-95%; ``long_steps: 0`` skips it and refers to
  the end of the curve);
* **NLinear**, fitted in closed form (ridge least squares) on the training sessions'
  training windows (zero-shot transfer) and on the support windows alone;
* **from scratch**: a POCO of the same configuration trained on the support windows only
  (every parameter, Adam, ``scratch_steps``).

:func:`neurocast.eval.adaptation.gain_statistics` turns the per-session curves into the
gain over zero-shot with its 95% interval and steps-to-95% (only where the reference
gain's interval lies above 0). :func:`pool` recomputes them over several seeds' runs.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from neurocast.data.forecast_data import Session
from neurocast.eval.adaptation import (
    SessionBatches,
    adapt_session,
    gain_statistics,
    score_batches,
    session_data,
    support_query,
)
from neurocast.eval.metrics import mean_ci95

#: per-session baseline entries (score on the budget's query windows)
BASELINES = ("zero_shot_mean_init", "zero_shot_own_init", "early_stopped", "long_finetune", "nlinear_train",
             "nlinear_support", "scratch")


def budget_label(kind: str, b) -> str:
    if kind == "windows":
        return "all windows" if b == "all" else f"{b:g} windows"
    return f"{b:g} s"


def fit_nlinear(nlinear, batches, ridge: float = 1e-3):
    """Fit an NLinear model in closed form (ridge least squares over every unit's window)."""
    xs, ys = [], []
    for b in batches:
        x = b.x.transpose(1, 2)[b.unit_mask]          # (n, C)
        y = b.y.transpose(1, 2)[b.unit_mask]          # (n, P)
        last = x[:, -1:]
        xs.append((x - last).double())
        ys.append((y - last).double())
    X, Y = torch.cat(xs), torch.cat(ys)
    X1 = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)], dim=1)
    A = X1.T @ X1 / X1.shape[0]
    reg = ridge * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    reg[-1, -1] = 0
    W = torch.linalg.solve(A + reg, X1.T @ Y / X1.shape[0])  # (C + 1, P)
    with torch.no_grad():
        nlinear.linear.weight.copy_(W[:-1].T.to(nlinear.linear.weight.dtype))
        nlinear.linear.bias.copy_(W[-1].to(nlinear.linear.bias.dtype))
    return nlinear


def run_protocol(
    model,
    held: list[Session],
    context: int,
    horizon: int,
    device: torch.device,
    ad,
    *,
    init: str,
    optimizer: str,
    lr: float | None,
    nlinear: Callable[[], Any] | None = None,
    nlinear_train=None,
    scratch: Callable[[Session], Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The protocol for every budget of ``ad`` (an AdaptationConfig) on the held-out sessions.

    ``nlinear()`` builds an untrained NLinear (fitted on each support set), ``nlinear_train``
    is one already fitted on the training sessions, ``scratch(session)`` builds an untrained
    POCO for one session; each is skipped when None.
    """
    L = context + horizon
    budgets = [("windows", b) for b in ad.budgets] + [("seconds", b) for b in ad.budget_seconds]
    out: dict[str, Any] = {
        "sessions": [s.name for s in held], "params": list(ad.params), "init": init, "optimizer": optimizer, "lr": lr,
        "normalization": ad.normalization, "holdout": ad.holdout, "steps": ad.steps, "long_steps": ad.long_steps,
        "scratch_steps": ad.scratch_steps if scratch is not None else None, "budgets": {},
    }
    common = dict(lr=lr, params=ad.params, optimizer=optimizer, batch_size=ad.batch_size,
                  normalization=ad.normalization, holdout=ad.holdout)
    for kind, b in budgets:
        label = budget_label(kind, b)
        per = []
        for i, s in enumerate(held):
            kw = ({"support_windows": None if b == "all" else int(b)} if kind == "windows"
                  else {"support_seconds": float(b)})
            support, query = support_query(s, L, query_windows=ad.query_windows, **kw)
            r = adapt_session(model, s, context, horizon, device, steps=ad.steps, eval_every=ad.eval_every,
                              eval_steps=ad.eval_steps, init=init, query=query, seed=seed * 1000 + i, **kw, **common)
            row: dict[str, Any] = {
                "session": s.name, "support_windows": r.support_windows, "fit_windows": r.fit_windows,
                "holdout_windows": r.holdout_windows, "query_windows": r.query_windows,
                "query_first_start": int(query[0]),
                "query_crc32": zlib.crc32(np.ascontiguousarray(query, np.int64).tobytes()),
                "copy_mse": r.copy_mse, "steps": r.steps, "curve": r.scores, "query_mse": r.query_mse,
                "support_loss_first": r.support_loss[0] if r.support_loss else None,
                "support_loss_last": r.support_loss[-1] if r.support_loss else None,
                "zero_shot_own_init": r.scores[0], "early_stopped": r.early_stopped_score,
                "early_stopped_step": r.best_step, "seconds_per_step": r.seconds / max(1, ad.steps),
            }
            if init == "mean":
                row["zero_shot_mean_init"] = r.scores[0]
            else:
                row["zero_shot_mean_init"] = adapt_session(model, s, context, horizon, device, steps=0, init="mean",
                                                           query=query, **kw, **common).scores[0]
            row["long_finetune"] = None
            if ad.long_steps:
                lg = adapt_session(model, s, context, horizon, device, steps=ad.long_steps, eval_every=ad.long_steps,
                                   init=init, query=query, seed=seed * 1000 + i, **kw, **common)
                row["long_finetune"] = lg.scores[-1]
            batches = SessionBatches(s, session_data(s, support, L, ad.normalization), context, horizon, device)
            qb = batches.chunks(query)
            row["nlinear_train"] = _score(nlinear_train, qb) if nlinear_train is not None else None
            row["nlinear_support"] = None
            if nlinear is not None:
                row["nlinear_support"] = _score(fit_nlinear(nlinear().to(device), batches.chunks(support)), qb)
            row["scratch"] = None
            if scratch is not None:
                torch.manual_seed(seed * 1000 + i)
                fresh = scratch(s).to(device)
                sr = adapt_session(fresh, s, context, horizon, device, steps=ad.scratch_steps,
                                   eval_every=ad.scratch_steps, lr=ad.scratch_lr, params="all", init="random",
                                   optimizer="adam", batch_size=ad.batch_size, normalization=ad.normalization,
                                   holdout=ad.holdout, query=query, seed=seed * 1000 + i, **kw)
                row["scratch"] = sr.early_stopped_score if sr.best_step is not None else sr.scores[-1]
            per.append(row)
        out["budgets"][label] = {"kind": kind, "budget": b, **summarise(per)}
    return out


def _score(model, query_batches) -> float:
    mse, copy = score_batches(model, {}, query_batches)
    return 1 - mse / copy


def summarise(per: list[dict[str, Any]]) -> dict[str, Any]:
    """Statistics over per-session (or session x seed) rows of one budget."""
    steps = np.asarray(per[0]["steps"])
    curves = np.array([p["curve"] for p in per])
    longs = [p["long_finetune"] for p in per]
    reference = np.array(longs, np.float64) if all(v is not None for v in longs) else None
    stats = gain_statistics(curves, steps, reference)
    out: dict[str, Any] = {"per_session": per, **stats}
    for key in BASELINES:
        vals = [p[key] for p in per if p.get(key) is not None]
        m, h = mean_ci95(vals) if vals else (None, None)
        out[key] = {"mean": m, "ci95": h, "n": len(vals)}
    out["support_windows"] = int(np.median([p["support_windows"] for p in per]))
    out["query_windows"] = int(np.median([p["query_windows"] for p in per]))
    first = [p["support_loss_first"] for p in per if p["support_loss_first"] is not None]
    last = [p["support_loss_last"] for p in per if p["support_loss_last"] is not None]
    out["support_loss_ratio"] = float(np.mean(last) / np.mean(first)) if first else None
    # the flat keys of the earlier protocol (summaries, tables)
    out["mean_score"] = stats["mean_curve"]
    out["zero_shot_score"] = stats["zero_shot"]["mean"]
    out["adapted_score"] = stats["adapted"]["mean"]
    out["long_finetune_score"] = out["long_finetune"]["mean"]
    return out


def pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Statistics of one budget pooled over several runs (seeds): the union of their per-session rows."""
    per = [p for r in runs for p in r["per_session"]]
    return summarise(per)
