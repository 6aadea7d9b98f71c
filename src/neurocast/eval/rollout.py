"""Autonomous roll-outs of a latent model and the metrics that judge them.

* latent roll-out: encode once, evolve the latent with the stimulus for n steps, decode
  every step;
* activity roll-out: as the latent one, but decode and re-encode at every observation
  interval (every ``time_units`` steps), as if the model's own output were the next
  observation.

Several seeded start points are drawn from the evaluation range (on the observation
grid in time-aligned acquisition; windows never cross a recording boundary). Step k of
a roll-out started at s is compared with frame s + k (k = 1..n); the baselines use the
same indexing (the anchor's interpolation curve was off by one frame):

* constant: the training mean of every neuron;
* interpolation (tu > 1): per-neuron linear interpolation between the observations
  (an oracle that sees future observations: the bar a dynamics model should clear
  between observation points).

Everything is in the model's normalised units. ``normalised MSE`` divides by the mean
per-neuron variance of the evaluation range, so 1 means "no better than each neuron's
mean", and the stable horizon is the first step where it exceeds 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neurocast.data.acquisition import Acquisition
from neurocast.data.latent_windows import LatentWindows
from neurocast.eval.metrics import stable_horizon
from neurocast.models.latent import LatentModel


@torch.no_grad()
def latent_rollout(model: LatentModel, x0: torch.Tensor, stim: torch.Tensor | None, n_steps: int,
                   reencode_every: int = 0, decode_chunk: int = 256) -> torch.Tensor:
    """Predictions (S, n_steps, N) for frames s+1..s+n from start frames x0 (S, N).

    ``stim`` (S, n_steps, S_dims) drives steps 0..n-1. ``reencode_every`` > 0 gives the
    activity roll-out (decode and re-encode every that many steps).
    """
    z = model.encode(x0)
    s_enc = model.encode_stimulus(stim) if stim is not None else None
    latents = []
    out = []
    for k in range(n_steps):
        z = model.evolve(z, None if s_enc is None else s_enc[:, k])
        if reencode_every and (k + 1) % reencode_every == 0:
            x = model.decode(z)
            z = model.encode(x)
        latents.append(z)
        if len(latents) == decode_chunk:
            out.append(model.decode(torch.stack(latents, dim=1)))
            latents = []
    if latents:
        out.append(model.decode(torch.stack(latents, dim=1)))
    return torch.cat(out, dim=1)


def rollout_starts(windows: LatentWindows, n_steps: int, n_starts: int, seed: int) -> np.ndarray:
    """Seeded start frames whose roll-out (n_steps frames after the start) stays in range."""
    saved = windows.window
    windows.window = n_steps
    try:
        valid = windows.valid_starts(windows.t0, windows.t1)
    finally:
        windows.window = saved
    if valid.size == 0:
        return valid
    rng = np.random.default_rng(seed)
    take = min(n_starts, valid.size)
    return np.sort(rng.choice(valid, size=take, replace=False))


def max_horizon(windows: LatentWindows) -> int:
    """Longest roll-out that fits in one continuous piece of the range (aligned start if needed)."""
    edges = [windows.t0, *[int(b) for b in windows.boundaries if windows.t0 < b < windows.t1], windows.t1]
    best = 0
    for a, b in zip(edges[:-1], edges[1:]):
        if windows.acq.aligned_starts:
            off = (windows.acq.origin - a) % windows.acq.tu
            a = a + off
        best = max(best, b - 1 - a)
    return max(best, 0)


@dataclass
class RolloutResult:
    kind: str                         # latent | activity
    starts: np.ndarray                # (S,) absolute start frames
    mse: np.ndarray                   # (S, n) neuron-averaged squared error per start and step
    constant: np.ndarray              # (S, n) same for the training-mean baseline
    interpolation: np.ndarray | None  # (S, n) same for the linear-interpolation baseline (tu > 1)
    data_variance: float              # mean per-neuron variance of the evaluation range
    var_true: np.ndarray              # (N,) per-neuron variance of the true trace (mean over starts)
    var_err: np.ndarray               # (N,) per-neuron variance of the error (mean over starts)
    trace_start: int                  # start whose traces are kept (median MSE)
    trace_true: np.ndarray            # (n, N_traced)
    trace_pred: np.ndarray            # (n, N_traced)
    trace_neurons: np.ndarray         # (N_traced,) neuron indices
    time_units: int
    window: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return int(self.mse.shape[1])

    @property
    def curve(self) -> np.ndarray:
        return self.mse.mean(0)

    def summary(self) -> dict[str, Any]:
        """Scalar metrics (see the module docstring)."""
        tu, w, n = self.time_units, self.window, self.horizon
        k = np.arange(1, n + 1)
        curve, const = self.curve, self.constant.mean(0)
        norm = curve / self.data_variance
        obs = (k % tu == 0) & (k <= w)
        between = (k % tu != 0) & (k <= w)
        beyond = k > w

        def part(c, sel):
            return float(c[sel].mean()) if sel.any() else None

        out = {
            "kind": self.kind,
            "horizon": n,
            "starts": int(self.starts.size),
            "stable_horizon": stable_horizon(norm),
            "stable_horizon_worst_start": int(min(stable_horizon(m / self.data_variance) for m in self.mse)),
            "mse_overall": float(curve.mean()),
            "mse_at_observation_points": part(curve, obs),
            "mse_between_observation_points": part(curve, between),
            "mse_within_training_window": part(curve, k <= w),
            "mse_beyond_training_window": part(curve, beyond),
            "mse_final_step": float(curve[-1]),
            "constant_mse_overall": float(const.mean()),
            "constant_mse_within_training_window": part(const, k <= w),
            "constant_mse_beyond_training_window": part(const, beyond),
            "data_variance": self.data_variance,
            "beats_constant_within_training_window": bool(part(curve, k <= w) < part(const, k <= w)),
            "variance_explained_median": float(np.nanmedian(self.variance_explained)),
        }
        if self.interpolation is not None:
            interp = self.interpolation.mean(0)
            out["interpolation_mse_within_training_window"] = part(interp, k <= w)
            out["interpolation_mse_between_observation_points"] = part(interp, between)
        out.update(self.extra)
        return out

    @property
    def variance_explained(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.var_true > 0, 1 - self.var_err / self.var_true, np.nan)


@torch.no_grad()
def evaluate_rollouts(
    model: LatentModel,
    windows: LatentWindows,
    kind: str,
    n_steps: int,
    n_starts: int,
    seed: int,
    trace_neurons: np.ndarray,
) -> RolloutResult | None:
    """Roll out from seeded starts of ``windows`` and compare with the truth and the baselines."""
    starts = rollout_starts(windows, n_steps, n_starts, seed)
    if starts.size == 0:
        return None
    acq = windows.acq
    tu = acq.tu
    N = windows.rec.N
    reencode = tu if kind == "activity" else 0
    mean_pred = windows.norm.apply(windows.norm.data_mean)
    interp_acq = acq if acq.mode != "all" else None
    S = starts.size
    mse = np.zeros((S, n_steps))
    const = np.zeros((S, n_steps))
    interp = np.zeros((S, n_steps)) if tu > 1 else None
    var_true = np.zeros(N)
    var_err = np.zeros(N)
    preds, trues = [], []
    # starts are rolled out together, in groups that keep (group, n, N) predictions small
    group = max(1, int(2e8 // max(1, n_steps * N)))
    for g0 in range(0, S, group):
        idx = list(range(g0, min(S, g0 + group)))
        chunks, offsets = [], []
        for i in idx:
            s = int(starts[i])
            c0 = max(windows.t0, s - tu)
            chunks.append(windows.load_chunk(c0, s + n_steps + 1))
            offsets.append(s - c0)
        x0 = torch.cat([c.x_in[j : j + 1] for c, j in zip(chunks, offsets)])
        stim = None
        if chunks[0].stim is not None:
            stim = torch.stack([c.stim[j : j + n_steps] for c, j in zip(chunks, offsets)])
        pred_all = latent_rollout(model, x0, stim, n_steps, reencode).cpu().numpy()
        for row, (i, chunk, j) in enumerate(zip(idx, chunks, offsets)):
            s = int(starts[i])
            pred = pred_all[row]
            true = chunk.x[j + 1 : j + 1 + n_steps].cpu().numpy()
            # staggered: compare on observed entries only (the truth exists only there)
            mask = acq.mask(s + 1, s + 1 + n_steps) if acq.mode == "staggered_random" else None
            err = pred - true
            if mask is None:
                mse[i] = (err**2).mean(1)
                const[i] = ((true - mean_pred) ** 2).mean(1)
                var_true += true.var(0)
                var_err += err.var(0)
            else:
                cnt = np.maximum(mask.sum(1), 1)
                mse[i] = np.where(mask, err**2, 0).sum(1) / cnt
                const[i] = np.where(mask, (true - mean_pred) ** 2, 0).sum(1) / cnt
                var_true += np.nanvar(np.where(mask, true, np.nan), 0)
                var_err += np.nanvar(np.where(mask, err, np.nan), 0)
            if interp is not None:
                # 'all' acquisition: observation points every tu frames from the start
                a = interp_acq or Acquisition("time_aligned", tu, N, origin=s)
                ie = a.interpolate(chunk.x.cpu().numpy(), chunk.t0)[j + 1 : j + 1 + n_steps] - true
                interp[i] = (ie**2).mean(1) if mask is None else np.where(mask, ie**2, 0).sum(1) / np.maximum(mask.sum(1), 1)
            preds.append(pred[:, trace_neurons])
            trues.append(true[:, trace_neurons])
    # variance of the range: per neuron over every frame of the evaluation range
    data_var = float(windows_variance(windows))
    med = int(np.argsort(mse.mean(1))[S // 2])
    return RolloutResult(
        kind=kind, starts=starts, mse=mse, constant=const, interpolation=interp, data_variance=data_var,
        var_true=var_true / S, var_err=var_err / S, trace_start=int(starts[med]), trace_true=trues[med],
        trace_pred=preds[med], trace_neurons=np.asarray(trace_neurons), time_units=tu, window=windows.window,
    )


def windows_variance(windows: LatentWindows, chunk: int = 65536) -> float:
    """Mean over neurons of the variance over the range (normalised units, observed entries)."""
    n = windows.rec.N
    s = np.zeros(n)
    ss = np.zeros(n)
    c = np.zeros(n)
    for a in range(windows.t0, windows.t1, chunk):
        b = min(windows.t1, a + chunk)
        x = windows.norm.apply(windows.rec.read(a, b, channel=windows.channel)).astype(np.float64)
        m = windows.acq.mask(a, b)
        if m is not None:
            x = np.where(m, x, 0.0)
            c += m.sum(0)
        else:
            c += x.shape[0]
        s += x.sum(0)
        ss += (x * x).sum(0)
    c = np.maximum(c, 1)
    var = ss / c - (s / c) ** 2
    return float(np.maximum(var, 0).mean()) or 1.0


def pick_trace_neurons(cell_types: np.ndarray | None, n_neurons: int, per_type: int, seed: int = 0,
                       max_neurons: int = 96) -> np.ndarray:
    """``per_type`` neurons of every cell type (seeded), or evenly spaced neurons without types."""
    rng = np.random.default_rng(seed)
    if cell_types is None:
        return np.unique(np.linspace(0, n_neurons - 1, min(n_neurons, 12)).astype(np.int64))
    picked = []
    for t in sorted(set(cell_types.tolist())):
        idx = np.flatnonzero(cell_types == t)
        picked.extend(rng.choice(idx, size=min(per_type, idx.size), replace=False).tolist())
    return np.asarray(sorted(picked)[:max_neurons], dtype=np.int64)
