"""Forecast evaluation: per-session errors, copy-last and mean baselines, prediction score.

For every session and split, on the same windows (stride ``eval_stride``, at most
``max_windows`` evenly spaced): squared and absolute errors per horizon step (pooled over
windows and units), the copy-last baseline (every future frame = the last context frame)
and the mean baseline (the training mean, 0 after normalisation). The prediction score is
1 - MSE_model / MSE_copy per session, averaged with equal weight over sessions
(:func:`neurocast.eval.metrics.prediction_score`); MSE and MAE are pooled over the
predictions of a dataset (sessions with more units weigh more), as in POCO.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from neurocast.data.forecast_data import Session, make_batch
from neurocast.eval.metrics import prediction_score
from neurocast.models.functional import forward_with, localise


def eval_windows(s: Session, split: str, length: int, stride: int, max_windows: int) -> np.ndarray:
    w = s.windows(split, length, stride)
    if w.size > max_windows:
        w = w[np.unique(np.round(np.linspace(0, w.size - 1, max_windows)).astype(np.int64))]
    return w


@torch.no_grad()
def evaluate_sessions(
    model,
    sessions: list[Session],
    split: str,
    context: int,
    horizon: int,
    tensors: dict[str, torch.Tensor],
    unit_offsets: dict[str, int],
    device: torch.device,
    stride: int = 1,
    max_windows: int = 4096,
    batch_size: int = 256,
    keep: bool = False,
    session_index: dict[str, int] | None = None,
    windows: dict[str, np.ndarray] | None = None,
    fast: dict[str, dict[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """Per-session metrics {name: {...}} (+ "_predictions" arrays when keep=True).

    Windows of ``context`` + ``horizon`` frames of the ``split`` pieces (every ``stride`` frames, at
    most ``max_windows`` evenly spaced, or exactly ``windows[name]``), scored ``batch_size`` at a
    time on ``device``; ``tensors`` holds each session's (T, D) data, ``unit_offsets`` /
    ``session_index`` its rows in the model's tables. Per session: MSE, MAE, the copy-last and
    mean baselines' MSE, the prediction score 1 - MSE / MSE_copy_last, pooled sums, and the MSE
    per horizon step; with ``keep``, the predictions, targets and contexts ((W, P, D), (W, P, D),
    (W, C, D)) of every window.
    ``fast`` maps a session to adapted embeddings: that session is then predicted through
    ``functional_call`` with local unit ids (see neurocast.models.functional).
    """
    was = model.training
    model.eval()
    out: dict[str, Any] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    L = context + horizon
    try:
        for s in sessions:
            starts = windows[s.name] if windows is not None else eval_windows(s, split, L, stride, max_windows)
            if starts.size == 0:
                continue
            sq = np.zeros(horizon)
            ab = np.zeros(horizon)
            cp = np.zeros(horizon)
            mn = np.zeros(horizon)
            n = 0
            kept_p, kept_y, kept_x = [], [], []
            for i in range(0, starts.size, batch_size):
                st = starts[i : i + batch_size]
                picks = np.stack([np.full(st.size, 0), st], axis=1)
                if fast is not None and s.name in fast:
                    b = localise(make_batch([s], picks, context, horizon, tensors, {s.name: 0}, device, {s.name: 0}))
                    p = forward_with(model, {k: v.to(device) for k, v in fast[s.name].items()}, b)[:, :, : s.D].float()
                else:
                    b = make_batch([s], picks, context, horizon, tensors, unit_offsets, device, session_index)
                    p = model(b)[:, :, : s.D].float()
                y = b.y[:, :, : s.D]
                last = b.x[:, -1:, : s.D]
                err = p - y
                sq += (err**2).sum((0, 2)).cpu().numpy()
                ab += err.abs().sum((0, 2)).cpu().numpy()
                cp += ((last - y) ** 2).sum((0, 2)).cpu().numpy()
                mn += (y**2).sum((0, 2)).cpu().numpy()
                n += st.size * s.D
                if keep:
                    kept_p.append(p.cpu().numpy())
                    kept_y.append(y.cpu().numpy())
                    kept_x.append(b.x[:, :, : s.D].cpu().numpy())
            mse = float(sq.sum() / (n * horizon))
            copy = float(cp.sum() / (n * horizon))
            out[s.name] = {
                "dataset": s.dataset,
                "windows": int(starts.size),
                "units": s.D,
                "mse": mse,
                "mae": float(ab.sum() / (n * horizon)),
                "copy_mse": copy,
                "mean_mse": float(mn.sum() / (n * horizon)),
                "score": float(1 - mse / copy) if copy > 0 else float("nan"),
                "sum_sq": float(sq.sum()),
                "sum_abs": float(ab.sum()),
                "count": int(n * horizon),
                "mse_per_step": (sq / n).tolist(),
                "copy_mse_per_step": (cp / n).tolist(),
                "mean_mse_per_step": (mn / n).tolist(),
            }
            if keep:
                preds[s.name] = {"prediction": np.concatenate(kept_p), "target": np.concatenate(kept_y),
                                 "context": np.concatenate(kept_x), "starts": starts}
    finally:
        model.train(was)
    if keep:
        out["_predictions"] = preds
    return out


def aggregate(per_session: dict[str, Any], dataset_names: list[str]) -> dict[str, Any]:
    """Per dataset: pooled MSE/MAE, mean score over sessions; overall: means over datasets."""
    rows = {k: v for k, v in per_session.items() if not k.startswith("_")}
    out: dict[str, Any] = {"datasets": {}}
    for d, name in enumerate(dataset_names):
        sess = {k: v for k, v in rows.items() if v["dataset"] == d}
        if not sess:
            continue
        count = sum(v["count"] for v in sess.values())
        score, per = prediction_score({k: v["mse"] for k, v in sess.items()},
                                      {k: v["copy_mse"] for k, v in sess.items()})
        out["datasets"][name] = {
            "mse": sum(v["sum_sq"] for v in sess.values()) / count,
            "mae": sum(v["sum_abs"] for v in sess.values()) / count,
            "score": score,
            "copy_mse": float(np.mean([v["copy_mse"] for v in sess.values()])),
            "sessions": len(sess),
            "scores": per,
        }
    ds = out["datasets"].values()
    out["mse"] = float(np.mean([d["mse"] for d in ds])) if ds else float("nan")
    out["mae"] = float(np.mean([d["mae"] for d in ds])) if ds else float("nan")
    out["score"] = float(np.mean([d["score"] for d in ds])) if ds else float("nan")
    return out
