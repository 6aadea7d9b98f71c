"""Meta-training for fast test-time adaptation (training.mode fomaml / e2e_ttt).

Each optimiser step ("meta-step") draws ``meta_batch_size`` training sessions (from any
dataset; each keeps its own dataset embedding). For every session:

1. a split time tau is drawn inside its training part; ``support_windows`` windows that
   end before tau (drawn anywhere before it, or with ``support_sampling: contiguous`` the
   run of consecutive windows ending there, like a few-shot budget at test time) and
   ``query_windows`` windows that start after it are drawn, so the query always lies
   later in time than the support (no overlap, unlike the anchor's shuffled 70/30 split
   of overlapping windows);
2. fresh embeddings for its units and session start from the learned initialisation
   (``meta.init``) - the state a brand-new recording starts in at test time;
3. the inner loop (:func:`neurocast.eval.inner_loop.inner_loop`, the same loop test-time
   adaptation uses) takes ``inner_steps`` SGD (or Adam, ``inner_optimizer``) steps of size
   ``inner_lr`` - or of learned per-group step sizes with ``learn_inner_lr`` (Meta-SGD) -
   on those embeddings and any
   other parameter groups in ``meta.adapt``, through ``torch.func.functional_call``;
4. the query loss of the adapted model is the session's meta-loss.

The meta-loss (mean over sessions, and over ``accumulation`` meta-batches whose
gradients are accumulated one by one to bound memory) updates every other parameter:
the Perceiver, the FiLM/MLP head, the dataset embeddings and the initialisation.
FOMAML treats the inner gradients as constants; E2E-TTT (second order) differentiates
through them (``create_graph=True``). ``support_ratio`` (logged) is the support loss
after the inner loop over the loss before it: near 1, the inner loop does nothing and
inner_lr is too small. ``training.init_from`` starts meta-training from a standard run.
Optional activation checkpointing recomputes the inner loop in the backward pass; optional
bf16 autocast on CUDA.

Validation adapts each of up to ``meta.val_sessions`` training sessions with the same
inner loop, from its earliest training windows, and scores its validation split.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from neurocast.data.forecast_data import Session, make_batch
from neurocast.errors import ConfigError, DataError
from neurocast.eval.adaptation import adapt_session
from neurocast.eval.inner_loop import inner_loop
from neurocast.eval.metrics import masked_mse
from neurocast.models.functional import adaptable, adapted_names, fast_init, forward_with, localise
from neurocast.train.forecast_task import ForecastTask


def support_query_split(starts: np.ndarray, length: int, n_support: int, n_query: int, rng: np.random.Generator,
                        contiguous: bool = False):
    """Support windows ending before a random time tau, query windows starting after it.

    ``contiguous``: the support is the run of consecutive windows that ends last before tau
    (a few-shot budget, as at test time), else windows drawn anywhere before tau."""
    starts = np.sort(starts)
    lo = starts[min(n_support, starts.size) - 1] + length  # tau such that at least n_support windows end before
    hi = starts[max(0, starts.size - min(n_query, starts.size))]  # ... and n_query start after
    if lo > hi:
        raise DataError(
            f"a session's training part is too short for {n_support} support + {n_query} query windows that do not "
            "overlap; lower training.meta.support_windows / query_windows"
        )
    tau = int(rng.integers(lo, hi + 1))
    pool_s = starts[starts + length <= tau]
    pool_q = starts[starts >= tau]
    if contiguous:
        support = pool_s[-n_support:]
    else:
        support = np.sort(rng.choice(pool_s, min(n_support, pool_s.size), replace=False))
    query = np.sort(rng.choice(pool_q, min(n_query, pool_q.size), replace=False))
    return support, query


class MetaTask(ForecastTask):
    def __init__(self, data_cfg, training, sessions: list[Session], dataset_names: list[str], model,
                 device: torch.device, seed: int):
        super().__init__(data_cfg, training, sessions, dataset_names, model, device, seed)
        if not hasattr(model, "embedding_names"):
            raise ConfigError("meta-training adapts per-session embeddings: it needs model.kind poco")
        self.meta = training.meta
        self.second_order = training.mode == "e2e_ttt"
        if self.meta.init == "learned" and not hasattr(model, "init_unit"):
            raise ConfigError("meta.init 'learned' needs model.learned_init (set by the pipeline)")
        if self.meta.learn_inner_lr and not hasattr(model, "inner_log_lr"):
            raise ConfigError("meta.learn_inner_lr needs model.learned_inner_lr (set by the pipeline)")
        #: None = the model's learned per-group step sizes (Meta-SGD)
        self.inner_lr = None if self.meta.learn_inner_lr else self.meta.inner_lr
        L = self.C + self.P
        self.session_starts = {s.name: s.windows("train", L) for s in self.train_sessions}
        self.local = {s.name: 0 for s in self.train_sessions}
        for s in self.train_sessions:  # fail early, not in the middle of training
            support_query_split(self.session_starts[s.name], L, self.meta.support_windows, self.meta.query_windows,
                                np.random.default_rng(0))

    # ------------------------------------------------------------------ batches
    def _session_batch(self, s: Session, starts: np.ndarray):
        picks = np.stack([np.zeros(starts.size, dtype=np.int64), starts], axis=1)
        return localise(make_batch([s], picks, self.C, self.P, self.tensors, self.local, self.device, self.local))

    def batches(self, epoch: int):
        L = self.C + self.P
        m = self.meta
        for _ in range(self.n_batches(epoch)):
            groups = []
            for _ in range(m.accumulation):
                k = min(m.meta_batch_size, len(self.train_sessions))
                chosen = self.rng.choice(len(self.train_sessions), size=k, replace=False)
                group = []
                for i in chosen:
                    s = self.train_sessions[int(i)]
                    sup, qry = support_query_split(self.session_starts[s.name], L, m.support_windows, m.query_windows,
                                                   self.rng, contiguous=m.support_sampling == "contiguous")
                    group.append((s, self._session_batch(s, sup), self._session_batch(s, qry)))
                groups.append(group)
            yield groups

    def batch_samples(self, batch) -> int:
        return int(sum(sup.size + qry.size for group in batch for _, sup, qry in group))

    # ------------------------------------------------------------------ meta-loss
    def _autocast(self):
        if self.meta.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def session_meta_loss(self, s: Session, support, query) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(query loss after the inner loop, support loss before it, support loss after it) for one session."""
        fast = adaptable(self.model, fast_init(self.model, s.D, self.meta.init), self.meta.adapt)
        with self._autocast():
            fast, inner = inner_loop(self.model, fast, support, self.meta.inner_steps, self.inner_lr,
                                     create_graph=self.second_order, checkpointed=self.meta.activation_checkpointing,
                                     optimizer=self.meta.inner_optimizer, names=adapted_names(fast, self.meta.adapt))
            # the query forward is differentiated once (only the inner steps twice): any kernel
            q = masked_mse(forward_with(self.model, fast, query, self.meta.activation_checkpointing).float(),
                           query.y, query.unit_mask, per_unit=True)
            with torch.no_grad():  # the support loss after the last inner step (inner[-1] is before it)
                after = masked_mse(forward_with(self.model, fast, support).float(), support.y, support.unit_mask,
                                   per_unit=True)
        return q, inner[0].detach(), after

    def losses(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        acc = len(batch)
        totals = {"total": torch.zeros(()), "query": torch.zeros(()), "support_before": torch.zeros(()),
                  "support_after": torch.zeros(())}
        graph_total = None
        for group in batch:
            loss = torch.zeros((), device=self.device)
            for s, sup, qry in group:
                q, first, last = self.session_meta_loss(s, sup, qry)
                loss = loss + q / len(group)
                totals["support_before"] += float(first) / (len(group) * acc)
                totals["support_after"] += float(last) / (len(group) * acc)
            totals["query"] += float(loss.detach()) / acc
            if acc > 1:
                (loss / acc).backward()  # accumulate: free this meta-batch's graph now
            else:
                graph_total = loss
        out: dict[str, Any] = {k: v for k, v in totals.items() if k != "total"}
        # how much the inner loop lowers the support loss (after / before): near 1 = it does nothing
        out["support_ratio"] = totals["support_after"] / totals["support_before"].clamp_min(1e-12)
        if acc > 1:
            out["total"] = totals["query"].clone()
            out["_grads_ready"] = True
        else:
            out["total"] = graph_total
        return out

    # ------------------------------------------------------------------ evaluation with adaptation
    def evaluate(self, split: str, keep: bool = False, sessions: list[Session] | None = None) -> dict[str, Any]:
        """Every session adapted from the initialisation on its earliest training windows
        (the inner loop: ``inner_steps`` SGD steps), then scored on ``split``."""
        from neurocast.eval.forecast_eval import aggregate, evaluate_sessions

        m = self.meta
        sessions = sessions or self.train_sessions
        fast, before = {}, {}
        for s in sessions:
            r = adapt_session(
                self.model, s, self.C, self.P, self.device, steps=m.inner_steps, lr=self.inner_lr,
                params=m.adapt, init=m.init, optimizer=m.inner_optimizer, support_windows=m.support_windows,
                query_windows=8, batch_size=m.support_windows, eval_every=m.inner_steps,
                normalization="session", holdout=0.0, seed=0, query_splits=(split,),
            )
            fast[s.name] = r.fast
            before[s.name] = r.query_mse[0]
        per = evaluate_sessions(
            self.model, sessions, split, self.C, self.P, self.tensors, self.unit_offsets, self.device,
            self.data_cfg.eval_stride, self.training.val_windows, keep=keep, fast=fast,
        )
        return {"sessions": per, **aggregate(per, self.dataset_names), "adapted_steps": m.inner_steps}

    def validate(self, epoch: int) -> dict[str, float]:
        sessions = self.train_sessions[: self.meta.val_sessions]
        ev = self.evaluate("val", sessions=sessions)
        out = {"val/loss": ev["mse"], "val/score": ev["score"], "val/mae": ev["mae"]}
        for name, d in ev["datasets"].items():
            out[f"val/{name}/mse"] = d["mse"]
            out[f"val/{name}/score"] = d["score"]
        return out
