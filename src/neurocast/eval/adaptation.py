"""Adapting a trained POCO model to a new session, and the adaptation curve.

Protocol (held-out sessions never seen in training):

* support: the *earliest* windows of the session's training part - a budget in windows
  (``support_windows``) or in seconds of recording (``support_seconds``), else all of it;
* query: validation and test windows that start after the last support frame (so no
  query frame was ever seen during adaptation), at most ``query_windows``, evenly spaced;
* with ``renormalize`` the session is re-normalised with statistics of the support frames
  only, so a few-shot budget really is all the data the model gets;
* new embeddings (unit table + session vector) start from ``init`` and are adapted with
  Adam or SGD for ``steps`` steps (``params: all`` adapts the whole model too), in eval
  mode (no dropout);
* the query score 1 - MSE / MSE_copy_last is recorded every ``eval_every`` steps, from
  step 0 (zero-shot) on; copy-last is computed on the same query windows.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neurocast.data.forecast_data import Session, make_batch
from neurocast.errors import DataError
from neurocast.eval.metrics import steps_to_fraction
from neurocast.train.ttt import EMBEDDINGS, fast_init, forward_with, localise, masked_mse


@dataclass
class AdaptationResult:
    session: str
    steps: list[int]
    scores: list[float]
    query_mse: list[float]
    copy_mse: float
    support_windows: int
    query_windows: int
    support_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    fast: dict[str, torch.Tensor] = field(default_factory=dict)
    model_state: dict[str, torch.Tensor] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "session": self.session, "steps": self.steps, "scores": self.scores, "query_mse": self.query_mse,
            "copy_mse": self.copy_mse, "support_windows": self.support_windows, "query_windows": self.query_windows,
            "pre_adaptation_query_mse": self.query_mse[0], "post_adaptation_query_mse": self.query_mse[-1],
            "pre_adaptation_score": self.scores[0], "post_adaptation_score": self.scores[-1],
            "seconds": self.seconds, "seconds_per_step": self.seconds / max(1, self.steps[-1]),
        }


def support_query(session: Session, length: int, support_windows: int | None = None,
                  support_seconds: float | None = None, query_windows: int = 512,
                  query_splits: tuple[str, ...] = ("val", "test")) -> tuple[np.ndarray, np.ndarray]:
    """Support starts (earliest training windows within the budget) and later query starts."""
    train = np.sort(session.windows("train", length))
    if train.size == 0:
        raise DataError(f"session {session.name!r} has no training window for support data")
    if support_windows is not None:
        support = train[:support_windows]
    elif support_seconds is not None:
        first = int(train[0])
        frames = int(round(support_seconds / session.dt))
        support = train[train + length <= first + frames]
        if support.size == 0:
            raise DataError(
                f"session {session.name!r}: {support_seconds} s is shorter than one window "
                f"({length} frames of {session.dt:.3g} s)"
            )
    else:
        support = train
    end = int(support.max()) + length
    query = np.sort(np.concatenate([session.windows(sp, length) for sp in query_splits]))
    query = query[query >= end]
    if query.size == 0:
        raise DataError(f"session {session.name!r}: no {'/'.join(query_splits)} window after the support data")
    if query.size > query_windows:
        query = query[np.unique(np.round(np.linspace(0, query.size - 1, query_windows)).astype(np.int64))]
    return support, query


def renormalized(session: Session, support: np.ndarray, length: int) -> np.ndarray:
    """The session's data re-normalised (per unit mean/std) on the support frames only."""
    lo, hi = int(support.min()), int(support.max()) + length
    frames = session.data[lo:hi]
    mean = frames.mean(0)
    std = frames.std(0)
    return ((session.data - mean) / np.where(std > 1e-3, std, 1.0)).astype(np.float32)


@torch.no_grad()
def _score(model, params, batches) -> tuple[float, float]:
    sq, cp, n = 0.0, 0.0, 0
    for b in batches:
        p = forward_with(model, params, b)
        sq += float(((p - b.y) ** 2).sum())
        cp += float(((b.x[:, -1:, :] - b.y) ** 2).sum())
        n += b.y.numel()
    return sq / n, cp / n


def adapt_session(
    model,
    session: Session,
    context: int,
    horizon: int,
    device: torch.device,
    *,
    steps: int,
    lr: float,
    params: str = "embeddings",
    init: str = "mean",
    optimizer: str = "adam",
    support_windows: int | None = None,
    support_seconds: float | None = None,
    query_windows: int = 512,
    batch_size: int = 64,
    eval_every: int = 1,
    renormalize: bool = True,
    seed: int = 0,
    keep_state: bool = False,
    query_splits: tuple[str, ...] = ("val", "test"),
) -> AdaptationResult:
    L = context + horizon
    support, query = support_query(session, L, support_windows, support_seconds, query_windows, query_splits)
    data = renormalized(session, support, L) if renormalize else session.data
    tensors = {session.name: torch.from_numpy(data).to(device)}
    local = {session.name: 0}

    def batch(starts):
        picks = np.stack([np.zeros(starts.size, dtype=np.int64), starts], axis=1)
        return localise(make_batch([session], picks, context, horizon, tensors, local, device, local))

    query_batches = [batch(query[i : i + 256]) for i in range(0, query.size, 256)]
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    target = copy.deepcopy(model) if params == "all" else model
    if init == "auto":
        init = "learned" if hasattr(target, "init_unit") else "mean"
    fast = {k: v.detach().clone().requires_grad_(True) for k, v in fast_init(target, session.D, init, g).items()}
    trainable = list(fast.values())
    if params == "all":
        trainable += [p for n, p in target.named_parameters() if n not in EMBEDDINGS]
    else:
        for p in target.parameters():
            p.requires_grad_(False)
    opt = torch.optim.Adam(trainable, lr=lr) if optimizer == "adam" else torch.optim.SGD(trainable, lr=lr)
    steps_done, scores, mses, sup_losses = [], [], [], []
    q_mse, copy_mse = _score(target, fast, query_batches)
    steps_done.append(0)
    scores.append(1 - q_mse / copy_mse)
    mses.append(q_mse)
    fixed = batch(support) if support.size <= batch_size else None
    t0 = time.perf_counter()
    try:
        for k in range(1, steps + 1):
            b = fixed if fixed is not None else batch(np.sort(rng.choice(support, batch_size, replace=False)))
            with torch.enable_grad():  # validation calls this inside no_grad()
                loss = masked_mse(forward_with(target, fast, b), b.y, b.unit_mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sup_losses.append(float(loss.detach()))
            if k % eval_every == 0 or k == steps:
                q_mse, _ = _score(target, fast, query_batches)
                steps_done.append(k)
                scores.append(1 - q_mse / copy_mse)
                mses.append(q_mse)
    finally:
        if params != "all":
            for p in target.parameters():
                p.requires_grad_(True)
        model.train(was)
    return AdaptationResult(
        session=session.name, steps=steps_done, scores=scores, query_mse=mses, copy_mse=copy_mse,
        support_windows=int(support.size), query_windows=int(query.size), support_loss=sup_losses,
        seconds=time.perf_counter() - t0, fast={k: v.detach().cpu() for k, v in fast.items()},
        model_state={k: v.detach().cpu() for k, v in target.state_dict().items()} if keep_state and params == "all" else None,
    )


def mean_curve(results: list[AdaptationResult]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean score over sessions) for results recorded at the same steps."""
    steps = np.asarray(results[0].steps)
    return steps, np.mean([r.scores for r in results], axis=0)


def steps_to_95(curve: np.ndarray, steps: np.ndarray, long_gain: float) -> int | None:
    """First recorded step reaching 95% of ``long_gain`` (the gain of long fine-tuning)."""
    k = steps_to_fraction(curve, long_gain, 0.95)
    return None if k is None else int(steps[k])
