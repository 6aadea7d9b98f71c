"""Multi-session forecasting task for the training loop.

One optimiser step takes one batch of windows from every dataset (sessions of a dataset
mixed, padded to the batch's largest session) and sums the per-dataset pooled MSEs
(weighted by the dataset's ``weight``), so large datasets do not dominate. The trainer's
"epoch" is one validation interval (``val_every`` steps). Validation: pooled MSE per
dataset on the validation split, averaged over datasets (``val/loss``, selects best.pt),
and the prediction score. Held-out sessions never enter a training batch.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from neurocast.data.forecast_data import Session, WindowSampler, make_batch
from neurocast.distributed import shard_rows
from neurocast.eval.forecast_eval import aggregate, evaluate_sessions
from neurocast.eval.metrics import masked_mse


class ForecastTask:
    def __init__(self, data_cfg, training, sessions: list[Session], dataset_names: list[str], model,
                 device: torch.device, seed: int):
        self.data_cfg, self.training = data_cfg, training
        self.C, self.P = data_cfg.context, data_cfg.horizon
        self.sessions = sessions
        self.train_sessions = [s for s in sessions if not s.held_out]
        self.dataset_names = dataset_names
        self.weights = [1.0] * len(dataset_names)
        self.model = model.to(device)
        self.device = device
        self.tensors = {s.name: torch.from_numpy(s.data).to(device) for s in sessions}
        offsets = model.sessions.offsets()
        self.unit_offsets = {s.name: int(offsets[s.index]) for s in self.train_sessions}
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
        L = self.C + self.P
        self.per_dataset = [[s for s in self.train_sessions if s.dataset == d] for d in range(len(dataset_names))]
        self.samplers = [WindowSampler(ss, L, data_cfg.train_stride, self.rng) for ss in self.per_dataset]
        self.epochs = math.ceil(training.max_steps / training.val_every)

    def set_weights(self, weights: list[float]) -> None:
        self.weights = list(weights)

    # ------------------------------------------------------------------ loop interface
    def start_epoch(self, epoch: int) -> None:
        pass

    def n_batches(self, epoch: int) -> int:
        return min(self.training.val_every, self.training.max_steps - epoch * self.training.val_every)

    def batches(self, epoch: int):
        rows = shard_rows(self.training.batch_size)
        for _ in range(self.n_batches(epoch)):
            yield [
                # every process draws the same global batch and gathers only its own rows
                make_batch(ss, smp.draw(self.training.batch_size)[rows], self.C, self.P, self.tensors,
                           self.unit_offsets, self.device)
                for ss, smp in zip(self.per_dataset, self.samplers)
            ]

    def batch_samples(self, batch) -> int:
        return int(sum(b.size for b in batch))

    def losses(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        total = torch.zeros((), device=self.device)
        out: dict[str, torch.Tensor] = {}
        for name, w, b in zip(self.dataset_names, self.weights, batch):
            loss = masked_mse(self.model(b), b.y, b.unit_mask, per_unit=True)
            out[f"mse_{name}"] = loss
            total = total + w * loss
        out["total"] = total
        return out

    def evaluate(self, split: str, keep: bool = False, sessions: list[Session] | None = None) -> dict[str, Any]:
        per = evaluate_sessions(
            self.model, sessions or self.train_sessions, split, self.C, self.P, self.tensors, self.unit_offsets,
            self.device, self.data_cfg.eval_stride, self.training.val_windows, keep=keep,
        )
        return {"sessions": per, **aggregate(per, self.dataset_names)}

    def validate(self, epoch: int) -> dict[str, float]:
        ev = self.evaluate("val")
        out = {"val/loss": ev["mse"], "val/score": ev["score"], "val/mae": ev["mae"]}
        for name, d in ev["datasets"].items():
            out[f"val/{name}/mse"] = d["mse"]
            out[f"val/{name}/score"] = d["score"]
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": json.dumps(self.rng.bit_generator.state),
            "orders": [torch.from_numpy(s.order.copy()) for s in self.samplers],
            "sessions": self.model.sessions.to_dict(),
            "dataset_names": list(self.dataset_names),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
        for s, o in zip(self.samplers, state["orders"]):
            s.order = o.numpy().astype(np.int64)
