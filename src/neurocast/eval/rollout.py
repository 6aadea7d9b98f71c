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
  between observation points);
* stimulus-only ridge and a linear dynamical model in a PCA latent, fitted under the same
  observation constraint (:mod:`neurocast.eval.latent_baselines`): the strongest simple
  baselines, which the model has to beat for a claim;
* from the mean (latent roll-outs): the model itself started from the training mean instead
  of the observation: how much of its result depends on the initial state (memory).

Two kinds of metric, both in the model's normalised units:

* global MSE (``mse_*``): the squared error averaged over neurons, as trained; with one
  global scale the neurons with the largest variance (the fly's photoreceptors) dominate it.
  ``normalised MSE`` divides by the mean per-neuron variance of the evaluation range, so 1
  means "no better than each neuron's mean", and the stable horizon is the first step where
  it exceeds 1;
* per-neuron (``per_neuron``): every neuron's MSE in units of its own training variance,
  averaged over neurons with equal weight, also without the input cells
  (``per_neuron_without_inputs``; R1-R8 for the fly). Near-silent neurons (variance below
  1e-4 x the median neuron's) are excluded and counted (``silent_neurons``).

Segments of the roll-out: at the observation points inside the training window (tu x ems
steps), between them, the whole window, beyond it, and overall.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neurocast.data.acquisition import Acquisition
from neurocast.data.latent_windows import LatentWindows
from neurocast.eval.metrics import stable_horizon, variance_explained
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


SEGMENTS = ("at_observation_points", "between_observation_points", "within_training_window",
            "beyond_training_window", "overall")
LINEAR = ("stimulus_ridge", "pca_lds")   # the observation-constrained linear baselines
PREDICTORS = ("model", "from_mean", "constant", "interpolation", "stimulus_ridge", "pca_lds")


def segment_masks(n: int, tu: int, window: int) -> dict[str, np.ndarray]:
    """Boolean masks over roll-out steps 1..n for every segment (see :data:`SEGMENTS`)."""
    k = np.arange(1, n + 1)
    return {
        "at_observation_points": (k % tu == 0) & (k <= window),
        "between_observation_points": (k % tu != 0) & (k <= window),
        "within_training_window": k <= window,
        "beyond_training_window": k > window,
        "overall": np.ones(n, dtype=bool),
    }


@dataclass
class RolloutResult:
    """Squared errors of a roll-out kind and of every baseline on the same starts and steps.

    ``curves[p]`` (S, n): neuron-averaged squared error of predictor p per start and step
    (the global metric, in the model's normalised units); ``per_neuron[p][segment]`` (N,): mean
    squared error of every neuron over starts and the steps of a segment. Predictors: ``model``
    (this roll-out kind), ``from_mean`` (latent kind: the same roll-out started from the training
    mean instead of the observation), ``constant`` (training mean), ``interpolation`` (tu > 1,
    an oracle), ``stimulus_ridge`` and ``pca_lds`` (see :mod:`neurocast.eval.latent_baselines`).
    """

    kind: str                         # latent | activity
    starts: np.ndarray                # (S,) absolute start frames
    curves: dict[str, np.ndarray]
    per_neuron: dict[str, dict[str, np.ndarray]]
    data_variance: float              # mean per-neuron variance of the evaluation range
    neuron_variance: np.ndarray       # (N,) per-neuron variance of the training range (normalised units)
    silent: np.ndarray                # (N,) bool: near-constant neurons (excluded from per-neuron ratios)
    input_neurons: np.ndarray         # (N,) bool: cells the stimulus drives directly (R1-R8 for the fly)
    var_true: np.ndarray              # (N,) per-neuron variance of the true trace (mean over starts)
    var_err: np.ndarray               # (N,) per-neuron variance of the model's error (mean over starts)
    trace_start: int                  # start whose traces are kept (median MSE)
    trace_true: np.ndarray            # (n, N_traced)
    trace_pred: np.ndarray            # (n, N_traced)
    trace_neurons: np.ndarray         # (N_traced,) neuron indices
    time_units: int
    window: int
    noise_floor: float | None = None  # process-noise variance in these units (simulations), None if unknown
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mse(self) -> np.ndarray:
        return self.curves["model"]

    @property
    def constant(self) -> np.ndarray:
        return self.curves["constant"]

    @property
    def interpolation(self) -> np.ndarray | None:
        return self.curves.get("interpolation")

    @property
    def horizon(self) -> int:
        return int(self.mse.shape[1])

    @property
    def curve(self) -> np.ndarray:
        return self.mse.mean(0)

    def segment_mse(self, predictor: str, segment: str) -> float | None:
        sel = segment_masks(self.horizon, self.time_units, self.window)[segment]
        c = self.curves.get(predictor)
        return float(c.mean(0)[sel].mean()) if c is not None and sel.any() else None

    def per_neuron_mse(self, predictor: str, segment: str, exclude_inputs: bool = False) -> float | None:
        """Mean over neurons of MSE / the neuron's own training variance (silent neurons excluded)."""
        v = self.per_neuron.get(predictor, {}).get(segment)
        if v is None:
            return None
        keep = ~self.silent & (~self.input_neurons if exclude_inputs else True)
        return float(np.mean(v[keep] / self.neuron_variance[keep])) if keep.any() else None

    def summary(self) -> dict[str, Any]:
        """Scalar metrics (see the module docstring)."""
        n = self.horizon
        curve = self.curve
        norm = curve / self.data_variance
        out: dict[str, Any] = {
            "kind": self.kind,
            "horizon": n,
            "starts": int(self.starts.size),
            "stable_horizon": stable_horizon(norm),
            "stable_horizon_worst_start": int(min(stable_horizon(m / self.data_variance) for m in self.mse)),
            "mse_final_step": float(curve[-1]),
            "data_variance": self.data_variance,
            "noise_floor": self.noise_floor,
            "variance_explained_median": _nanmedian(self.variance_explained[~self.silent]),
            "silent_neurons": int(self.silent.sum()),
            "input_neurons": int(self.input_neurons.sum()),
        }
        for seg in SEGMENTS:
            out[f"mse_{seg}"] = self.segment_mse("model", seg)
        # legacy names kept for summaries and old runs' tables
        for seg in ("within_training_window", "beyond_training_window", "overall"):
            out[f"constant_mse_{seg}"] = self.segment_mse("constant", seg)
        if "interpolation" in self.curves:
            for seg in ("within_training_window", "between_observation_points"):
                out[f"interpolation_mse_{seg}"] = self.segment_mse("interpolation", seg)
        baselines: dict[str, Any] = {}
        for p in PREDICTORS[1:]:
            if p not in self.curves:
                continue
            baselines[p] = {
                "mse": {seg: self.segment_mse(p, seg) for seg in SEGMENTS},
                "per_neuron": {seg: self.per_neuron_mse(p, seg) for seg in SEGMENTS},
                "per_neuron_without_inputs": {seg: self.per_neuron_mse(p, seg, True) for seg in SEGMENTS},
            }
        out["baselines"] = baselines
        out["per_neuron"] = {seg: self.per_neuron_mse("model", seg) for seg in SEGMENTS}
        out["per_neuron_without_inputs"] = {seg: self.per_neuron_mse("model", seg, True) for seg in SEGMENTS}
        out["beats_constant_within_training_window"] = bool(
            out["mse_within_training_window"] < out["constant_mse_within_training_window"])
        linear = [p for p in LINEAR if p in self.curves]
        if linear:
            # the best observation-constrained linear baseline per segment and metric
            best: dict[str, Any] = {}
            for metric, get in (("per_neuron_without_inputs", lambda p, g: self.per_neuron_mse(p, g, True)),
                                ("per_neuron", lambda p, g: self.per_neuron_mse(p, g)),
                                ("mse", self.segment_mse)):
                best[metric] = {}
                for seg in SEGMENTS:
                    vals = {p: get(p, seg) for p in linear}
                    vals = {p: v for p, v in vals.items() if v is not None}
                    if not vals:
                        continue
                    name = min(vals, key=vals.get)
                    model = (out[metric] if metric != "mse" else {g: out[f"mse_{g}"] for g in SEGMENTS})[seg]
                    best[metric][seg] = {"baseline": name, "baseline_value": vals[name], "model": model,
                                         "ratio": None if model is None or vals[name] <= 0 else model / vals[name]}
            out["best_linear"] = best
            stim = self.curves.get("stimulus_ridge")
            if stim is not None:
                worse = np.flatnonzero(~(curve <= stim.mean(0)))
                out["stable_horizon_vs_stimulus_ridge"] = int(worse[0] + 1) if worse.size else n
        out.update(self.extra)
        return out

    @property
    def variance_explained(self) -> np.ndarray:
        return variance_explained(var_err=self.var_err, var_true=self.var_true)


def _nanmedian(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


@torch.no_grad()
def evaluate_rollouts(
    model: LatentModel,
    windows: LatentWindows,
    kind: str,
    n_steps: int,
    n_starts: int,
    seed: int,
    trace_neurons: np.ndarray,
    baselines=None,
    neuron_variance: np.ndarray | None = None,
    input_neurons: np.ndarray | None = None,
    noise_share: float | None = None,
) -> RolloutResult | None:
    """Roll out from seeded starts of ``windows`` and compare with the truth and the baselines.

    ``baselines``: a fitted :class:`~neurocast.eval.latent_baselines.LatentBaselines` (stimulus
    ridge and PCA linear dynamics on the same starts); ``neuron_variance`` (N,): training
    variance per neuron for the per-neuron metrics (default: the evaluation range's);
    ``input_neurons`` (N,) bool: cells the stimulus drives directly; ``noise_share``: the share
    of the range's variance due to process noise (known for simulations): the noise floor
    no predictor that does not see the noise can go below, drawn on the figures.
    """
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
    segs = segment_masks(n_steps, tu, windows.window)
    names = ["model", "constant"]
    if kind == "latent":
        names.append("from_mean")
    if tu > 1:
        names.append("interpolation")
    if baselines is not None and baselines.stimulus is not None:
        names.append("stimulus_ridge")
    if baselines is not None and baselines.lds is not None:
        names.append("pca_lds")
    curves = {p: np.zeros((S, n_steps)) for p in names}
    per_neuron = {p: {g: np.zeros(N) for g in SEGMENTS} for p in names}
    counts = {g: np.zeros(N) for g in SEGMENTS}
    var_true = np.zeros(N)
    var_err = np.zeros(N)
    preds, trues = [], []
    lags = baselines.stimulus.lags if baselines is not None and baselines.stimulus is not None else 0
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
        from_mean = None
        if "from_mean" in names:
            x_mean = torch.as_tensor(mean_pred, device=x0.device).expand_as(x0).contiguous()
            from_mean = latent_rollout(model, x_mean, stim, n_steps, 0).cpu().numpy()
        for row, (i, chunk, j) in enumerate(zip(idx, chunks, offsets)):
            s = int(starts[i])
            true = chunk.x[j + 1 : j + 1 + n_steps].cpu().numpy()
            # staggered: compare on observed entries only (the truth exists only there)
            mask = acq.mask(s + 1, s + 1 + n_steps) if acq.mode == "staggered_random" else None
            pred = {"model": pred_all[row], "constant": np.broadcast_to(mean_pred, true.shape)}
            if from_mean is not None:
                pred["from_mean"] = from_mean[row]
            if "interpolation" in names:
                # 'all' acquisition: observation points every tu frames from the start
                a = interp_acq or Acquisition("time_aligned", tu, N, origin=s)
                pred["interpolation"] = a.interpolate(chunk.x.cpu().numpy(), chunk.t0)[j + 1 : j + 1 + n_steps]
            if "stimulus_ridge" in names or "pca_lds" in names:
                # frames s - lags .. s + n (the last row only anchors frame s + n's lags)
                sn = _stimulus_block(windows, s - lags, s + n_steps + 1)
                if "stimulus_ridge" in names:
                    pred["stimulus_ridge"] = baselines.stimulus.predict(sn, lags + 1, n_steps)
                if "pca_lds" in names:
                    pred["pca_lds"] = baselines.lds.rollout(chunk.x_in[j].cpu().numpy(), sn[lags : lags + n_steps],
                                                            n_steps)
            for p, y in pred.items():
                err2 = (y - true) ** 2
                if mask is None:
                    curves[p][i] = err2.mean(1)
                    for g, sel in segs.items():
                        if sel.any():
                            per_neuron[p][g] += err2[sel].sum(0)
                else:
                    err2 = np.where(mask, err2, 0.0)
                    curves[p][i] = err2.sum(1) / np.maximum(mask.sum(1), 1)
                    for g, sel in segs.items():
                        if sel.any():
                            per_neuron[p][g] += err2[sel].sum(0)
            for g, sel in segs.items():
                counts[g] += sel.sum() if mask is None else mask[sel].sum(0)
            err = pred["model"] - true
            if mask is None:
                var_true += true.var(0)
                var_err += err.var(0)
            else:
                var_true += np.nanvar(np.where(mask, true, np.nan), 0)
                var_err += np.nanvar(np.where(mask, err, np.nan), 0)
            preds.append(pred["model"][:, trace_neurons])
            trues.append(true[:, trace_neurons])
    for p in names:
        for g in SEGMENTS:
            per_neuron[p][g] = per_neuron[p][g] / np.maximum(counts[g], 1)
    # variance of the range: per neuron over every frame of the evaluation range
    data_var, range_var = windows_variance(windows, per_neuron=True)
    nvar = range_var if neuron_variance is None else np.asarray(neuron_variance, np.float64)
    silent = silent_neurons(nvar)
    inputs = np.zeros(N, dtype=bool) if input_neurons is None else np.asarray(input_neurons, bool)
    med = int(np.argsort(curves["model"].mean(1))[S // 2])
    return RolloutResult(
        kind=kind, starts=starts, curves=curves, per_neuron=per_neuron, data_variance=data_var,
        neuron_variance=nvar, silent=silent, input_neurons=inputs,
        var_true=var_true / S, var_err=var_err / S, trace_start=int(starts[med]), trace_true=trues[med],
        trace_pred=preds[med], trace_neurons=np.asarray(trace_neurons), time_units=tu, window=windows.window,
        noise_floor=None if noise_share is None else float(noise_share) * data_var,
    )


SILENT_RELATIVE = 1e-4


def silent_neurons(variance: np.ndarray) -> np.ndarray:
    """Neurons whose variance is below 1e-4 x the median neuron's: ratios to their variance are meaningless."""
    v = np.asarray(variance, np.float64)
    med = float(np.median(v[v > 0])) if np.any(v > 0) else 0.0
    return ~(v > SILENT_RELATIVE * med) if med > 0 else np.ones(v.shape, dtype=bool)


def _stimulus_block(windows: LatentWindows, a: int, b: int) -> np.ndarray:
    """Normalised stimulus of frames [a, b) (frames before a recording boundary or 0 are the grey mean: zeros)."""
    rec = windows.rec
    lo, hi = max(a, 0), min(b, rec.T)
    s = rec.read_stimulus(lo, hi)
    s = windows.stim_norm.apply(s) if windows.stim_norm is not None else s.astype(np.float32)
    if lo > a or hi < b:
        s = np.concatenate([np.zeros((lo - a, s.shape[1]), np.float32), s, np.repeat(s[-1:], b - hi, axis=0)])
    # lags from before the start's own sequence belong to another sequence: grey (zero) instead
    # (roll-outs never cross a boundary, so one inside [a, b) lies before the start)
    if windows.boundaries.size:
        inside = windows.boundaries[(windows.boundaries > a) & (windows.boundaries < b)]
        if inside.size:
            s[: int(inside.max()) - a] = 0.0
    return s


def windows_variance(windows: LatentWindows, chunk: int = 65536, per_neuron: bool = False):
    """Mean over neurons of the variance over the range (normalised units, observed entries);
    with ``per_neuron`` also the (N,) variances."""
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
    var = np.maximum(ss / c - (s / c) ** 2, 0)
    mean = float(var.mean()) or 1.0
    return (mean, var) if per_neuron else mean


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
