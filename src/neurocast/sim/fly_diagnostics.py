"""How realistic a fly visual system parameter set is: the same numbers for any network.

* **variance shares** under naturalistic stimuli (noise-free): the share of all voltage
  variance in the photoreceptors R1-R8 and in every cell type;
* **near-silent cells**: per cell type the fraction of cells whose voltage std under those
  stimuli is below ``silent_std``;
* **process-noise share**: the same stimuli with the recording's process noise, variance of
  (noisy - noise-free) over the variance of the noisy voltage;
* **forgetting time**: the state is perturbed (Gaussian, ``perturb_std`` x each cell's std)
  and both copies are driven by the same stimulus; the forgetting time is the first step
  at which the RMS difference falls below 1/e of its initial value (also in seconds);
* **direction selectivity** of T4a-d and T5a-d to ON and OFF edges moving in ``n_angles``
  directions at several speeds (flyvis's definition, Lappalainen et al. 2024): for the
  central cell, the peak of the rectified voltage r(theta) while the edge passes,
  ``DSI = |sum_theta r(theta) e^{i theta}| / max over ON/OFF of sum_theta r(theta)``,
  averaged over speeds. T4 is reported for ON edges and T5 for OFF edges (their preferred
  contrast); the preferred direction is the angle of the vector sum.

Arrays in, numbers out: no files (the CLI and the benchmark write them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from neurocast.sim.fly_dynamics import FlySimulator
from neurocast.sim.fly_network import FlyNetwork, hex_to_cartesian
from neurocast.sim.fly_params import FlyParameters

DS_TYPES = ("T4a", "T4b", "T4c", "T4d", "T5a", "T5b", "T5c", "T5d")
PHOTORECEPTORS = ("R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8")


@dataclass
class DiagnosticsSpec:
    dt: float = 0.02
    deg_per_column: float = 5.8
    noise_std: float = 0.0            # the recording's process noise (0: noise share not measured)
    natural_s: float = 20.0           # seconds of naturalistic stimulus per sequence
    sequences: int = 4
    seed: int = 0
    silent_std: float = 1e-3
    perturb_std: float = 1.0          # perturbation in units of each cell's std
    n_angles: int = 12
    speeds_deg_s: tuple[float, ...] = (13.9, 37.7, 72.5)   # flyvis's 4.8, 13, 25 half-ommatidia / s
    edge_start_deg: float = -29.0     # flyvis's offsets (-10, 11) half-ommatidia
    edge_end_deg: float = 32.0
    post_s: float = 0.5
    warmup_s: float = 2.0
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, **kwargs) -> "DiagnosticsSpec":
        """A cheaper check for monitoring training: one edge speed, 4 s of natural stimulus."""
        return cls(**{"natural_s": 4.0, "sequences": 2, "speeds_deg_s": (37.7,), **kwargs})


def _central(net: FlyNetwork, type_name: str) -> int:
    t = net.type_index(type_name)
    cells = np.flatnonzero(net.node_type == t)
    d = np.abs(net.u[cells]) + np.abs(net.v[cells]) + np.abs(net.u[cells] + net.v[cells])
    return int(cells[np.argmin(d)])


def natural_stimulus(net: FlyNetwork, spec: DiagnosticsSpec) -> np.ndarray:
    """(T, C, B) naturalistic luminance, seeded by ``spec.seed``."""
    from neurocast.schema.stimuli import StimulusSet
    from neurocast.sim.stimuli import StimulusStream

    xy = hex_to_cartesian(net.columns) * spec.deg_per_column
    stim = StimulusSet(families={"natural": 1.0}, segment_s=(1.0, 4.0), seed=spec.seed)
    T = int(round(spec.natural_s / spec.dt))
    return np.stack([StimulusStream(stim, xy, spec.dt, stream=b).read(T) for b in range(spec.sequences)], axis=2)


def edge_stimuli(net: FlyNetwork, spec: DiagnosticsSpec) -> tuple[np.ndarray, list[dict]]:
    """(T, C, B) moving ON/OFF edges from grey, every angle and speed, padded with the final frame.

    The edge front moves from ``edge_start_deg`` to ``edge_end_deg`` (relative to the central
    column, along the motion direction); columns behind it take the edge's intensity (1 = ON,
    0 = OFF), the rest stay grey (0.5). Returns the stimuli and, per sequence, its angle,
    polarity, speed and the number of frames the edge moves.
    """
    xy = hex_to_cartesian(net.columns) * spec.deg_per_column
    angles = np.arange(spec.n_angles) * 360.0 / spec.n_angles
    meta, lengths = [], []
    for speed in spec.speeds_deg_s:
        for pol in ("on", "off"):
            for a in angles:
                n = (int(np.ceil((spec.edge_end_deg - spec.edge_start_deg) / speed / spec.dt))
                     + int(round(spec.post_s / spec.dt)))
                meta.append({"angle": float(a), "polarity": pol, "speed": float(speed), "frames": n})
                lengths.append(n)
    T = max(lengths)
    out = np.full((T, xy.shape[0], len(meta)), 0.5, dtype=np.float32)
    t = np.arange(T) * spec.dt
    for b, m in enumerate(meta):
        d = np.array([np.cos(np.deg2rad(m["angle"])), np.sin(np.deg2rad(m["angle"]))])
        proj = xy @ d
        front = np.minimum(spec.edge_start_deg + m["speed"] * t, spec.edge_end_deg + spec.deg_per_column)
        behind = np.clip(0.5 + (front[:, None] - proj[None, :]) / spec.deg_per_column, 0.0, 1.0)
        lum = 1.0 if m["polarity"] == "on" else 0.0
        out[:, :, b] = 0.5 + (lum - 0.5) * behind
    return out, meta


def dsi_from_peaks(peaks: np.ndarray, angles_deg: np.ndarray) -> tuple[float, float]:
    """DSI and preferred direction (deg) of one tuning curve ``peaks`` (n_angles,) (flyvis's definition,
    normalised by this curve's own sum; see :func:`direction_selectivity` for the ON/OFF maximum)."""
    z = np.sum(peaks * np.exp(1j * np.deg2rad(angles_deg)))
    norm = np.sum(np.abs(peaks))
    return (float(np.abs(z) / norm) if norm > 0 else 0.0), float(np.rad2deg(np.angle(z)) % 360)


def edge_peaks(sim: FlySimulator, spec: DiagnosticsSpec) -> np.ndarray:
    """Peak rectified voltage of the central T4a-d/T5a-d cells: (speeds, 2 polarities ON/OFF, angles, 8 types)."""
    stim, meta = edge_stimuli(sim.net, spec)
    state = sim.initial_state(stim.shape[2], warmup_s=spec.warmup_s, calcium=False)
    V = _run(sim, state, stim, [_central(sim.net, t) for t in DS_TYPES])  # (T, 8, B)
    peaks = np.zeros((len(spec.speeds_deg_s), 2, spec.n_angles, len(DS_TYPES)))
    for b, m in enumerate(meta):
        i = spec.speeds_deg_s.index(m["speed"])
        j = 0 if m["polarity"] == "on" else 1
        k = int(round(m["angle"] * spec.n_angles / 360.0)) % spec.n_angles
        peaks[i, j, k] = np.maximum(V[: m["frames"], :, b], 0.0).max(axis=0)
    return peaks


def dsi_table(peaks: np.ndarray, angles_deg: np.ndarray, types=DS_TYPES) -> dict:
    """DSI per type from peaks (speeds, ON/OFF, angles, types), flyvis's definition.

    For each speed: DSI(pol) = |sum_theta r_pol(theta) e^{i theta}| / max over ON/OFF of
    sum_theta |r(theta)|; then the mean over speeds. Tuning curves are speed-averaged peaks.
    """
    z = np.exp(1j * np.deg2rad(np.asarray(angles_deg)))[None, None, :, None]
    vec = np.abs((peaks * z).sum(axis=2))                      # (speeds, 2, types)
    norm = np.abs(peaks).sum(axis=2).max(axis=1, keepdims=True)  # (speeds, 1, types)
    dsi = np.where(norm > 0, vec / np.where(norm > 0, norm, 1.0), 0.0).mean(axis=0)  # (2, types)
    curves = peaks.mean(axis=0)                                 # (2, angles, types)
    out = {}
    for t, name in enumerate(types):
        preferred = 0 if name.startswith("T4") else 1
        pol = ("on", "off")[preferred]
        out[name] = {
            "dsi_on": float(dsi[0, t]),
            "dsi_off": float(dsi[1, t]),
            "dsi": float(dsi[preferred, t]),
            "preferred_contrast": pol,
            "preferred_direction_deg": dsi_from_peaks(curves[preferred, :, t], np.asarray(angles_deg))[1],
            "tuning_on": curves[0, :, t].tolist(),
            "tuning_off": curves[1, :, t].tolist(),
        }
    return out


def direction_selectivity(sim: FlySimulator, spec: DiagnosticsSpec) -> dict:
    """Per T4/T5 subtype: DSI for ON and OFF edges (speed-averaged), preferred direction, tuning curves."""
    angles = np.arange(spec.n_angles) * 360.0 / spec.n_angles
    types = dsi_table(edge_peaks(sim, spec), angles)
    return {"angles_deg": angles.tolist(), "speeds_deg_s": list(spec.speeds_deg_s), "types": types}


def _run(sim: FlySimulator, state, stim: np.ndarray, cells: list[int] | None = None, generator=None) -> np.ndarray:
    """Voltages (T, N or len(cells), B) for a stimulus block, in blocks to bound memory."""
    chunks = []
    x = torch.from_numpy(stim)
    idx = None if cells is None else torch.as_tensor(cells)
    for t0 in range(0, x.shape[0], 500):
        out, state = sim.run(state, x[t0 : t0 + 500], generator, channels=("voltage",))
        v = out["voltage"]
        chunks.append((v if idx is None else v[:, idx.to(v.device)]).cpu().numpy())
    return np.concatenate(chunks, axis=0)


def forgetting_time(sim: FlySimulator, stim: np.ndarray, spec: DiagnosticsSpec, cell_std: np.ndarray) -> dict:
    """Steps until a perturbation of the state decays to 1/e (RMS over cells and sequences)."""
    B = stim.shape[2]
    base = sim.initial_state(B, warmup_s=spec.warmup_s, calcium=False)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    noise = torch.randn(base.voltage.shape, generator=gen) * torch.from_numpy(cell_std)[:, None] * spec.perturb_std
    pert = type(base)(base.voltage + noise.to(base.voltage.device), None)
    horizon = min(stim.shape[0], int(round(5.0 / spec.dt)))
    a = _run(sim, base, stim[:horizon])
    b = _run(sim, pert, stim[:horizon])
    d = np.sqrt(((a - b) ** 2).mean(axis=(1, 2)))
    below = np.flatnonzero(d < d[0] / np.e)
    steps = int(below[0]) if below.size else None
    return {
        "steps": steps,
        "seconds": None if steps is None else steps * spec.dt,
        "curve": (d / d[0]).tolist()[: min(horizon, 100)],
        "perturb_std": spec.perturb_std,
    }


def diagnose(net: FlyNetwork, params: FlyParameters, spec: DiagnosticsSpec | None = None) -> dict:
    """Every realism number of ``params`` on ``net`` (see the module docstring)."""
    spec = spec or DiagnosticsSpec()
    sim = FlySimulator(net, params, dt=spec.dt, noise_std=0.0, device=spec.device)
    stim = natural_stimulus(net, spec)
    state = sim.initial_state(stim.shape[2], warmup_s=spec.warmup_s, calcium=False)
    V = _run(sim, state, stim)  # (T, N, B)
    var = V.var(axis=0).mean(axis=1)  # per cell, averaged over sequences
    std = np.sqrt(var)
    types = net.cell_types
    total = float(var.sum())
    is_r = np.isin(types, PHOTORECEPTORS)
    per_type = {}
    for t in net.type_names:
        m = types == t
        per_type[t] = {
            "cells": int(m.sum()),
            "variance_share": float(var[m].sum() / total) if total > 0 else 0.0,
            "silent_fraction": float((std[m] < spec.silent_std).mean()),
            "mean_voltage": float(V[:, m].mean()),
            "std": float(np.median(std[m])),
        }
    out = {
        "extent": net.extent,
        "cells": net.n_nodes,
        "photoreceptor_variance_share": float(var[is_r].sum() / total) if total > 0 else 0.0,
        "photoreceptor_cell_share": float(is_r.mean()),
        "silent_fraction": float((std < spec.silent_std).mean()),
        "silent_std": spec.silent_std,
        "median_cell_std": float(np.median(std)),
        "cell_types": per_type,
    }
    if spec.noise_std > 0:
        noisy = FlySimulator(net, params, dt=spec.dt, noise_std=spec.noise_std, device=spec.device)
        gen = torch.Generator(device=noisy.device).manual_seed(spec.seed + 2)
        Vn = _run(noisy, noisy.initial_state(stim.shape[2], warmup_s=spec.warmup_s, calcium=False), stim, generator=gen)
        vn = Vn.var(axis=0).mean(axis=1)
        vd = (Vn - V).var(axis=0).mean(axis=1)
        out["noise_std"] = spec.noise_std
        out["noise_variance_share"] = float(vd.sum() / vn.sum()) if vn.sum() > 0 else None
        for t in net.type_names:
            m = types == t
            out["cell_types"][t]["noise_variance_share"] = float(vd[m].sum() / vn[m].sum()) if vn[m].sum() > 0 else None
    out["forgetting"] = forgetting_time(sim, stim, spec, np.maximum(std, 1e-6).astype(np.float32))
    ds = direction_selectivity(sim, spec)
    out["direction_selectivity"] = ds
    t4 = [ds["types"][t]["dsi"] for t in DS_TYPES[:4]]
    t5 = [ds["types"][t]["dsi"] for t in DS_TYPES[4:]]
    out["summary"] = {
        "median_dsi_t4": float(np.median(t4)),
        "median_dsi_t5": float(np.median(t5)),
        "forgetting_steps": out["forgetting"]["steps"],
        "photoreceptor_variance_share": out["photoreceptor_variance_share"],
        "silent_fraction": out["silent_fraction"],
        "noise_variance_share": out.get("noise_variance_share"),
    }
    return out
