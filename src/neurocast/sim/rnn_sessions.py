"""Multi-session random-RNN datasets: config -> dataset folder of one store per session.

The model (see :mod:`neurocast.schema.rnn_simulation`) for session s = 0 .. S-1:

    J_s = (g / sqrt(N)) (sqrt(1 - eta^2) T + eta Z_s)
    h  <- h + (dt / tau) (-h + J_s tanh(h)) + noise_std sqrt(2 dt / tau) xi
    frame k = mean of tanh(h[observed_s]) over steps k * downsample + 1 .. (k + 1) * downsample

Random streams are NumPy ``SeedSequence`` s with spawn keys: the template T comes from
``SeedSequence(template_seed, spawn_key=(0,))``; session s's perturbation Z_s, initial
state h0 ~ U(-1, 1), process noise and observed subset come from the four children of
``SeedSequence(seed, spawn_key=(1, s))``. A session's numbers therefore depend only on the
config and its index (adding sessions does not change the existing ones), and with
eta = 0 all sessions share J but differ in h0, noise and observed units.

All sessions are simulated together (float64, one stacked matrix-vector product per Euler
step) and streamed to disk block by block. Output folder ``<output_root>/<name>-<hash>/``
(hash of the config without ``output_root`` and ``description``) or ``output``::

    simulation.yaml       the resolved config
    session_00.zarr ...   one store per session: channel "activity" (T, observed_units),
                          frame interval dt * downsample, neuron ids "unit<k>" (k = index in
                          the full network), provenance with seeds, gain, eta, observed units
    COMPLETE              written last

A second call with the same config reuses a complete folder without simulating; a folder
holding a different simulation (or anything else) is never overwritten.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurocast.data.store import RecordingWriter
from neurocast.errors import DataError
from neurocast.progress import info, progress
from neurocast.schema.rnn_simulation import RNNSimulationConfig
from neurocast.sim.dataset_folder import COMPLETE, dataset_folder, finished_store, mark_complete, open_dataset  # noqa: F401

CHANNEL = "activity"
#: recorded frames simulated (and written) per block
BLOCK_FRAMES = 512
#: Euler steps whose process noise is drawn at once
NOISE_STEPS = 4096


# ---------------------------------------------------------------------------- folder


def session_name(cfg: RNNSimulationConfig, index: int) -> str:
    """``session_XX`` (zero-padded to at least two digits, more for 100+ sessions)."""
    width = max(2, len(str(cfg.n_sessions - 1)))
    return f"session_{index:0{width}d}"


# ---------------------------------------------------------------------------- networks


@dataclass
class RNNSession:
    """One session's network, initial state, observed units and noise stream."""

    index: int
    connectivity: np.ndarray   # (N, N) float64, J_s
    h0: np.ndarray             # (N,) float64
    observed: np.ndarray       # (K,) int64, sorted indices into the network
    noise: np.random.Generator


def template_connectivity(cfg: RNNSimulationConfig) -> np.ndarray:
    """The template T (N, N) of standard normal entries shared by all sessions."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.template_seed, spawn_key=(0,)))
    return rng.standard_normal((cfg.n_units, cfg.n_units))


def build_session(cfg: RNNSimulationConfig, index: int, template: np.ndarray | None = None) -> RNNSession:
    """Session ``index``'s connectivity, initial state, observed subset and noise generator."""
    N = cfg.n_units
    T = template_connectivity(cfg) if template is None else template
    conn, state, noise, subset = (
        np.random.default_rng(child)
        for child in np.random.SeedSequence(cfg.seed, spawn_key=(1, index)).spawn(4)
    )
    eta = cfg.connectivity_noise
    J = math.sqrt(1.0 - eta * eta) * T
    if eta > 0:
        J = J + eta * conn.standard_normal((N, N))
    J *= cfg.gain / math.sqrt(N)
    h0 = state.uniform(-1.0, 1.0, N)
    observed = np.sort(subset.choice(N, size=cfg.observed_units, replace=False)).astype(np.int64)
    return RNNSession(index, J, h0, observed, noise)


def build_sessions(cfg: RNNSimulationConfig) -> list[RNNSession]:
    template = template_connectivity(cfg)
    return [build_session(cfg, s, template) for s in range(cfg.n_sessions)]


# ---------------------------------------------------------------------------- dynamics


class RNNSimulator:
    """Euler integration of all sessions at once: state h (S, N)."""

    def __init__(self, cfg: RNNSimulationConfig, sessions: list[RNNSession]):
        self.cfg = cfg
        self.sessions = sessions
        self.J = np.stack([s.connectivity for s in sessions])          # (S, N, N)
        self.h = np.stack([s.h0 for s in sessions])                    # (S, N)
        self.observed = np.stack([s.observed for s in sessions])       # (S, K)
        self.rows = np.arange(len(sessions))[:, None]
        self.alpha = cfg.dt / cfg.tau
        self.sigma = cfg.noise_std * math.sqrt(2.0 * cfg.dt / cfg.tau)

    def _noise(self, steps: int) -> np.ndarray:
        """(steps, S, N) scaled process noise, each session from its own generator."""
        if self.sigma == 0:
            return np.zeros((steps, *self.h.shape))
        xi = np.stack([s.noise.standard_normal((steps, self.cfg.n_units)) for s in self.sessions], axis=1)
        return xi * self.sigma

    def advance(self, steps: int, record: np.ndarray | None = None) -> None:
        """Take ``steps`` Euler steps; with ``record`` (steps, S, K), store tanh(h) of the observed units after each."""
        h, J, a = self.h, self.J, self.alpha
        r = np.tanh(h)
        for c0 in range(0, steps, NOISE_STEPS):
            noise = self._noise(min(NOISE_STEPS, steps - c0))
            for i in range(noise.shape[0]):
                h += a * (np.matmul(J, r[..., None])[..., 0] - h) + noise[i]
                r = np.tanh(h)
                if record is not None:
                    record[c0 + i] = r[self.rows, self.observed]

    def frames(self, n: int) -> np.ndarray:
        """Simulate ``n`` frames: (n, S, K) block averages of tanh(h) over ``downsample`` steps."""
        ds = self.cfg.downsample
        rates = np.empty((n * ds, len(self.sessions), self.observed.shape[1]))
        self.advance(n * ds, rates)
        return rates.reshape(n, ds, *rates.shape[1:]).mean(axis=1)


# ---------------------------------------------------------------------------- dataset


def simulate_rnn(cfg: RNNSimulationConfig, output: str | Path | None = None) -> Path:
    """Simulate every session of ``cfg`` (reusing a finished folder); returns the dataset folder."""
    folder, complete = open_dataset(cfg, output)
    if complete:
        return folder
    paths = [folder / f"{session_name(cfg, s)}.zarr" for s in range(cfg.n_sessions)]
    todo = [s for s, path in enumerate(paths) if not finished_store(path)]
    if todo:
        write_sessions(cfg, paths, todo)
    mark_complete(folder, cfg)
    return folder


def _provenance(cfg: RNNSimulationConfig, session: RNNSession) -> dict:
    return {
        "source": "rnn_simulation",
        "simulation": cfg.name,
        "session_index": session.index,
        "n_units": cfg.n_units,
        "observed_units": session.observed.tolist(),
        "gain": cfg.gain,
        "connectivity_noise": cfg.connectivity_noise,
        "tau": cfg.tau,
        "dt": cfg.dt,
        "downsample": cfg.downsample,
        "frame_dt": cfg.frame_dt,
        "noise_std": cfg.noise_std,
        "warmup_s": cfg.warmup_s,
        "template_seed": cfg.template_seed,
        "seed": cfg.seed,
    }


def write_sessions(cfg: RNNSimulationConfig, paths: list[Path], todo: list[int]) -> None:
    """Simulate all sessions together and write the stores of the sessions in ``todo``.

    Every session is simulated (the dynamics are vectorised over sessions and each
    session's numbers depend only on its own streams), so rewriting a subset reproduces
    exactly what a full run writes.
    """
    sessions = build_sessions(cfg)
    sim = RNNSimulator(cfg, sessions)
    T = cfg.frames
    sim.advance(cfg.warmup_steps)
    bar = progress(total=T, desc=f"simulate {cfg.name}", unit="frame")
    with contextlib.ExitStack() as stack:
        writers = {
            s: stack.enter_context(
                RecordingWriter(
                    paths[s],
                    n_neurons=cfg.observed_units,
                    dt=cfg.frame_dt,
                    channels=[CHANNEL],
                    neuron_ids=[f"unit{k}" for k in sessions[s].observed],
                    session=session_name(cfg, s),
                    provenance=_provenance(cfg, sessions[s]),
                    overwrite=False,
                )
            )
            for s in todo
        }
        for t0 in range(0, T, BLOCK_FRAMES):
            n = min(BLOCK_FRAMES, T - t0)
            block = sim.frames(n)                                   # (n, S, K)
            if not np.all(np.isfinite(block)):
                raise DataError(f"simulation {cfg.name!r} diverged (non-finite rates near frame {t0})")
            for s, writer in writers.items():
                writer.append({CHANNEL: block[:, s, :].astype(np.float32)})
            bar.update(n)
    bar.close()
    info(f"{cfg.name}: {len(todo)} session(s) x {T} frames of {cfg.observed_units} units -> {paths[0].parent}")
