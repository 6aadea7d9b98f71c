"""Adapting a trained POCO model to a new session, and the adaptation curve.

Protocol (held-out sessions never seen in training):

* support: the *earliest* windows of the session's training part - a budget in windows
  (``support_windows``) or in seconds of recording (``support_seconds``), else all of it;
* query: validation and test windows that start after the last support frame (so no
  query frame was ever seen during adaptation), at most ``query_windows``, evenly spaced;
  or exactly the ``query`` starts given (the protocol scores every baseline on them);
* ``normalization``: ``session`` (default) keeps the session's preprocessing, whose
  per-unit statistics come from its whole training part - unlabelled activity, fitted
  exactly as for the training sessions; ``support`` re-normalises the session with the
  support frames' statistics only. A 10-window budget spans 73 frames at C + P = 64, and
  statistics of so few frames are unreliable: on the simulated sessions they halved the
  zero-shot score (0.30 -> 0.16) and made every adaptation step worse, so ``support`` is
  for studying that effect (or for models with per-window scaling, ``model.input_norm``);
* new embeddings (unit table + session vector) start from ``init``; they and any other
  parameter groups in ``params`` (``units``, ``session``, ``film``, ``output``,
  ``backbone``; ``embeddings``, ``all``) take ``steps`` steps of SGD or Adam through
  :func:`neurocast.eval.inner_loop.inner_loop` - the same loop meta-training uses - in eval mode
  (no dropout); the model's own tensors never change;
* ``holdout`` (a fraction) holds back the latest support windows for early stopping: the
  steps are fitted on the earlier windows whose target frames all precede the held-back
  windows' targets, the held-back loss is recorded at every evaluation, and the adapted
  parameters are those of the evaluation step with the lowest held-back loss. Budgets too
  small to hold back windows with unseen targets (fewer than ~P + 2 windows) run without;
* the query score 1 - MSE / MSE_copy_last is recorded every ``eval_every`` steps, from
  step 0 (zero-shot) on; copy-last is computed on the same query windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neurocast.data.forecast_data import Session, make_batch
from neurocast.errors import ConfigError, DataError
from neurocast.eval.inner_loop import inner_loop
from neurocast.eval.metrics import masked_mse, mean_ci95, steps_to_fraction
from neurocast.models.functional import adaptable, adapted_names, expand_groups, fast_init, forward_with, localise

NORMALIZATIONS = ("session", "support")


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
    holdout_loss: list[float] = field(default_factory=list)
    best_step: int | None = None
    fit_windows: int = 0
    holdout_windows: int = 0
    normalization: str = "session"
    seconds: float = 0.0
    fast: dict[str, torch.Tensor] = field(default_factory=dict)
    query_starts: np.ndarray | None = None

    @property
    def early_stopped_score(self) -> float | None:
        return None if self.best_step is None else self.scores[self.steps.index(self.best_step)]

    def embeddings(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.fast.items() if k in ("unit_emb", "session_emb")}

    def adapted_parameters(self) -> dict[str, torch.Tensor]:
        """Adapted model parameters other than the new session's embeddings (params beyond embeddings)."""
        return {k: v for k, v in self.fast.items() if k not in ("unit_emb", "session_emb")}

    def summary(self) -> dict[str, Any]:
        return {
            "session": self.session, "steps": self.steps, "scores": self.scores, "query_mse": self.query_mse,
            "copy_mse": self.copy_mse, "support_windows": self.support_windows, "query_windows": self.query_windows,
            "fit_windows": self.fit_windows, "holdout_windows": self.holdout_windows,
            "holdout_loss": self.holdout_loss, "early_stopped_step": self.best_step,
            "early_stopped_score": self.early_stopped_score, "normalization": self.normalization,
            "pre_adaptation_query_mse": self.query_mse[0], "post_adaptation_query_mse": self.query_mse[-1],
            "pre_adaptation_score": self.scores[0], "post_adaptation_score": self.scores[-1],
            "support_loss_first": self.support_loss[0] if self.support_loss else None,
            "support_loss_last": self.support_loss[-1] if self.support_loss else None,
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


def holdout_split(support: np.ndarray, context: int, horizon: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held back): the latest ``fraction`` of the support windows are held back, and
    only windows whose target frames all precede the held-back targets are fitted (a gap
    of ``horizon`` windows at stride 1). (support, empty) when the budget is too small."""
    support = np.sort(support)
    if fraction <= 0 or support.size < 2:
        return support, support[:0]
    n_held = max(1, int(round(fraction * support.size)))
    held = support[-n_held:]
    fit = support[support + context + horizon <= held[0] + context]
    if fit.size == 0:
        return support, support[:0]
    return fit, held


def renormalized(session: Session, support: np.ndarray, length: int) -> np.ndarray:
    """The session's data re-normalised (per unit mean/std) on the support frames only."""
    lo, hi = int(support.min()), int(support.max()) + length
    frames = session.data[lo:hi]
    mean = frames.mean(0)
    std = frames.std(0)
    return ((session.data - mean) / np.where(std > 1e-3, std, 1.0)).astype(np.float32)


def session_data(session: Session, support: np.ndarray, length: int, normalization: str) -> np.ndarray:
    """The session's activity as the model sees it under ``normalization`` (see the module docstring)."""
    if normalization == "session":
        return session.data
    if normalization == "support":
        return renormalized(session, support, length)
    raise ConfigError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")


class SessionBatches:
    """Localised batches of one session's windows (data already normalised as chosen)."""

    def __init__(self, session: Session, data: np.ndarray, context: int, horizon: int, device: torch.device):
        self.session, self.C, self.P, self.device = session, context, horizon, device
        self.tensors = {session.name: torch.from_numpy(np.ascontiguousarray(data)).to(device)}
        self.local = {session.name: 0}

    def __call__(self, starts: np.ndarray):
        picks = np.stack([np.zeros(starts.size, dtype=np.int64), starts], axis=1)
        return localise(make_batch([self.session], picks, self.C, self.P, self.tensors, self.local, self.device,
                                   self.local))

    def chunks(self, starts: np.ndarray, size: int = 256) -> list:
        return [self(starts[i : i + size]) for i in range(0, starts.size, size)]


@torch.no_grad()
def score_batches(model, params, batches) -> tuple[float, float]:
    """(MSE, copy-last MSE) of ``model`` with ``params`` over the batches, pooled over windows and units."""
    sq, cp, n = 0.0, 0.0, 0
    for b in batches:
        p = forward_with(model, params, b)
        sq += float(((p - b.y) ** 2).sum())
        cp += float(((b.x[:, -1:, :] - b.y) ** 2).sum())
        n += b.y.numel()
    return sq / n, cp / n


@torch.no_grad()
def batches_loss(model, params, batches) -> float:
    """Mean over the batches of the masked MSE of ``model`` with ``params``."""
    return float(np.mean([float(masked_mse(forward_with(model, params, b), b.y, b.unit_mask, per_unit=True))
                          for b in batches]))


def adapt_session(
    model,
    session: Session,
    context: int,
    horizon: int,
    device: torch.device,
    *,
    steps: int,
    lr: float | None,
    params="embeddings",
    init: str = "mean",
    optimizer: str = "adam",
    support_windows: int | None = None,
    support_seconds: float | None = None,
    query_windows: int = 512,
    query: np.ndarray | None = None,
    batch_size: int = 64,
    eval_every: int = 1,
    eval_steps: list[int] | None = None,
    normalization: str = "session",
    holdout: float = 0.0,
    seed: int = 0,
    query_splits: tuple[str, ...] = ("val", "test"),
) -> AdaptationResult:
    """Adapt ``model`` to ``session`` (see the module docstring); ``lr`` None = learned step sizes.

    Windows are ``context`` + ``horizon`` frames; ``steps`` steps of ``optimizer`` on ``params``
    from ``init`` (learned / mean / random / auto), support mini-batches of ``batch_size`` windows
    drawn with ``seed``; the support is the earliest ``support_windows`` windows or
    ``support_seconds`` of the training part (default: all of it), the query ``query`` starts or
    up to ``query_windows`` later windows of ``query_splits``. The query is scored at step 0,
    every ``eval_every`` steps (or at ``eval_steps``) and at the end. Returns an
    :class:`AdaptationResult` (the curve, early stopping, the adapted tensors on the CPU);
    the model's own tensors never change.
    """
    L = context + horizon
    support, default_query = support_query(session, L, support_windows, support_seconds, query_windows, query_splits)
    query = default_query if query is None else np.asarray(query)
    batch = SessionBatches(session, session_data(session, support, L, normalization), context, horizon, device)
    query_batches = batch.chunks(query)
    fit, held = holdout_split(support, context, horizon, holdout)
    scored = held
    if held.size > 256:
        scored = held[np.unique(np.round(np.linspace(0, held.size - 1, 256)).astype(np.int64))]
    held_batches = batch.chunks(scored) if held.size else []  # at most 256 held-back windows are scored
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init == "auto":
        init = "learned" if hasattr(model, "init_unit") else "mean"
    groups = expand_groups(params)
    fast = adaptable(model, fast_init(model, session.D, init, g), groups, detach=True)
    names = adapted_names(fast, groups)
    steps_done, scores, mses, held_losses = [0], [], [], []
    q_mse, copy_mse = score_batches(model, fast, query_batches)
    scores.append(1 - q_mse / copy_mse)
    mses.append(q_mse)
    if held_batches:
        held_losses.append(batches_loss(model, fast, held_batches))
    best = {"step": 0, "loss": held_losses[0] if held_losses else None, "fast": fast}
    fixed = batch(fit) if fit.size <= batch_size else None

    def support_batch(k: int):
        return fixed if fixed is not None else batch(np.sort(rng.choice(fit, batch_size, replace=False)))

    at = set(eval_steps) if eval_steps else None

    def record(k: int, current: dict[str, torch.Tensor], loss: torch.Tensor) -> bool:
        if (k in at if at is not None else k % eval_every == 0) or k == steps:
            q, _ = score_batches(model, current, query_batches)
            steps_done.append(k)
            scores.append(1 - q / copy_mse)
            mses.append(q)
            if held_batches:
                h = batches_loss(model, current, held_batches)
                held_losses.append(h)
                if h < best["loss"]:
                    best.update(step=k, loss=h, fast=current)
        return False

    t0 = time.perf_counter()
    try:
        with torch.enable_grad():  # validation calls this inside no_grad()
            fast, losses = inner_loop(model, fast, support_batch, steps, lr, create_graph=False, optimizer=optimizer,
                                      track=False, callback=record, names=names)
    finally:
        model.train(was)
    final = best["fast"] if held_batches else fast
    return AdaptationResult(
        session=session.name, steps=steps_done, scores=scores, query_mse=mses, copy_mse=copy_mse,
        support_windows=int(support.size), query_windows=int(query.size),
        support_loss=[float(x) for x in losses], holdout_loss=held_losses,
        best_step=best["step"] if held_batches else None, fit_windows=int(fit.size), holdout_windows=int(held.size),
        normalization=normalization, seconds=time.perf_counter() - t0,
        fast={k: v.detach().cpu() for k, v in final.items() if k in names or k in ("unit_emb", "session_emb")},
        query_starts=query,
    )


def mean_curve(results: list[AdaptationResult]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean score over sessions) for results recorded at the same steps."""
    steps = np.asarray(results[0].steps)
    return steps, np.mean([r.scores for r in results], axis=0)


def steps_to_95(curve: np.ndarray, steps: np.ndarray, long_gain: float) -> int | None:
    """First recorded step reaching 95% of ``long_gain`` (the gain of long fine-tuning)."""
    k = steps_to_fraction(curve, long_gain, 0.95)
    return None if k is None else int(steps[k])


def gain_statistics(curves: np.ndarray, steps: np.ndarray, reference: np.ndarray | None = None) -> dict[str, Any]:
    """Adaptation gain over zero-shot with its 95% interval, and steps-to-95% where there is a gain.

    ``curves`` (n, K+1): query scores of n adapted sessions (or session x seed pairs) at
    ``steps`` (steps[0] = 0, zero-shot); ``reference`` (n,): each one's score after long
    fine-tuning (the gain steps-to-95% refers to), or None to refer to the end of the
    curve. Steps-to-95% (first step where the mean curve's gain reaches 95% of the mean
    reference gain) is reported only where the reference gain's 95% interval lies above
    0; otherwise it is None with the note "no gain".
    """
    curves = np.asarray(curves, np.float64)
    steps = np.asarray(steps)
    zero = curves[:, 0]
    gain_k = curves[:, -1] - zero
    ref = gain_k if reference is None else np.asarray(reference, np.float64) - zero
    gm, gh = mean_ci95(gain_k)
    rm, rh = mean_ci95(ref)
    lo, hi = mean_ci95(curves[:, 0])
    mean = curves.mean(0)
    half = np.array([mean_ci95(curves[:, j])[1] for j in range(curves.shape[1])])
    defined = bool(np.isfinite(rm) and np.isfinite(rh) and rm - rh > 0)
    s95 = steps_to_95(mean, steps, rm) if defined else None
    note = None
    if not defined:
        note = ("no gain (the gain's 95% interval includes 0)" if rm + rh >= 0
                else "loss (the gain's 95% interval is below 0)")
    elif s95 is None:
        note = "95% of the gain not reached"
    return {
        "n": int(curves.shape[0]), "steps": steps.tolist(), "mean_curve": mean.tolist(), "ci95_curve": half.tolist(),
        "zero_shot": {"mean": lo, "ci95": hi},
        "adapted": {"mean": float(mean[-1]), "ci95": float(half[-1])},
        "gain": {"mean": gm, "ci95": gh},
        "reference": "long fine-tuning" if reference is not None else "end of the curve",
        "reference_gain": {"mean": rm, "ci95": rh},
        "steps_to_95": s95, "steps_to_95_note": note,
    }


#: Adam step size for standard models: on the simulated sessions 1e-3 gained where 1e-2
#: overfitted few-shot budgets (see docs/forecasting.md, test-time adaptation)
DEFAULT_ADAM_LR = 1e-3


def resolve_optimizer(optimizer: str, lr: float | None, training) -> tuple[str, float | None]:
    """(optimizer, lr) for adapting a model trained with ``training`` (a ForecastTraining).

    ``auto``: the meta inner loop's optimizer for meta-trained models (what they were
    trained for), Adam for standard ones. lr None: the inner loop's step size (None = its
    learned per-group step sizes) when adapting a meta-trained model with its own
    optimizer, else 1e-3 for Adam.
    """
    meta_trained = training.mode != "standard"
    inner = training.meta.inner_optimizer
    if optimizer == "auto":
        optimizer = inner if meta_trained else "adam"
    if lr is not None:
        return optimizer, lr
    if meta_trained and optimizer == inner:
        return optimizer, None if training.meta.learn_inner_lr else training.meta.inner_lr
    if optimizer == "adam":
        return optimizer, DEFAULT_ADAM_LR
    raise ConfigError("SGD adaptation of a standard model needs a learning rate (eval.adaptation.lr or --lr)")
