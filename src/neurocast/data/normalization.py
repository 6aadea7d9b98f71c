"""Per-neuron normalisation fitted on training frames only.

``x_norm = (x - mean) / scale`` with, per mode:

* ``none``          mean 0, scale 1
* ``center``        per-neuron mean, scale 1
* ``center_scale``  per-neuron mean, one global scale = sqrt(mean per-neuron variance)
                    (keeps the relative size of neurons: quiet neurons stay quiet)
* ``zscore``        per-neuron mean and std, the std floored at 1% of the global scale so
                    near-constant neurons are not blown up

Statistics are accumulated block by block (a recording of 1e6 frames never has to be in
memory) and only over observed entries when an acquisition mask is given.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from neurocast.errors import DataError

MODES = ("none", "center", "center_scale", "zscore")
ZSCORE_FLOOR = 0.01


class Normalizer:
    def __init__(self, mean: np.ndarray, scale: np.ndarray, mode: str, data_mean: np.ndarray | None = None):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)
        self.mode = mode
        # the training mean itself (what the constant "mean" baseline predicts), in raw units
        self.data_mean = self.mean if data_mean is None else np.asarray(data_mean, dtype=np.float32)

    @classmethod
    def fit(cls, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]], n: int, mode: str) -> "Normalizer":
        """Fit from (block (t, n), observed mask (t, n) or None) pairs."""
        if mode not in MODES:
            raise DataError(f"normalization {mode!r} is not one of {', '.join(MODES)}")
        s = np.zeros(n)
        ss = np.zeros(n)
        c = np.zeros(n)
        for block, mask in blocks:
            x = block.astype(np.float64)
            if mask is None:
                s += x.sum(0)
                ss += (x * x).sum(0)
                c += x.shape[0]
            else:
                x = np.where(mask, x, 0.0)
                s += x.sum(0)
                ss += (x * x).sum(0)
                c += mask.sum(0)
        if np.any(c == 0):
            raise DataError(f"normalization: neuron {int(np.flatnonzero(c == 0)[0])} has no observed training frame")
        mean = s / c
        var = np.maximum(ss / c - mean**2, 0.0)
        glob = float(np.sqrt(var.mean())) or 1.0
        if mode == "none":
            return cls(np.zeros(n), np.ones(n), mode, mean)
        if mode == "center":
            return cls(mean, np.ones(n), mode, mean)
        if mode == "center_scale":
            return cls(mean, np.full(n, glob), mode, mean)
        return cls(mean, np.maximum(np.sqrt(var), ZSCORE_FLOOR * glob), mode, mean)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale).astype(np.float32)

    def state_dict(self) -> dict:
        import torch

        return {
            "mean": torch.from_numpy(self.mean),
            "scale": torch.from_numpy(self.scale),
            "data_mean": torch.from_numpy(self.data_mean),
            "mode": self.mode,
        }

    @classmethod
    def from_state(cls, state: dict) -> "Normalizer":
        def arr(x):
            return x.numpy() if hasattr(x, "numpy") else np.asarray(x)

        return cls(arr(state["mean"]), arr(state["scale"]), state["mode"], arr(state["data_mean"]))
