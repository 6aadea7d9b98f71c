"""Acquisition: which (frame, neuron) entries of a recording count as observed.

Simulations store every frame; real microscopes see a neuron only every ``tu`` frames.
An :class:`Acquisition` emulates that on full-resolution data, so that training can be
restricted to what a real experiment would have recorded:

* ``all``              every frame of every neuron is observed;
* ``time_aligned``     all neurons are observed together at frames origin + k*tu;
* ``staggered_random`` neuron i is observed at frames origin + phase_i + k*tu, with its own
                       phase in [0, tu) drawn from ``seed`` (a scanning microscope).

``origin`` is the first training frame, so the observation grid is one grid for the
whole recording (training, validation and evaluation use the same frames).
"""

from __future__ import annotations

import numpy as np

from neurocast.errors import ConfigError

MODES = ("all", "time_aligned", "staggered_random")


class Acquisition:
    def __init__(self, mode: str, time_units: int, n_neurons: int, seed: int = 42, origin: int = 0):
        if mode == "all_time_points":
            mode = "all"
        if mode not in MODES:
            raise ConfigError(f"acquisition mode {mode!r} is not one of {', '.join(MODES)}")
        if time_units < 1:
            raise ConfigError(f"time_units must be >= 1, got {time_units}")
        self.mode = mode
        self.tu = int(time_units)
        self.n_neurons = int(n_neurons)
        self.seed = int(seed)
        self.origin = int(origin)
        if mode == "staggered_random":
            self.phases = np.random.default_rng(self.seed).integers(0, self.tu, size=self.n_neurons)
        elif mode == "time_aligned":
            self.phases = np.zeros(self.n_neurons, dtype=np.int64)
        else:
            self.phases = None

    @property
    def aligned_starts(self) -> bool:
        """Whether windows must start on the common observation grid."""
        return self.mode == "time_aligned"

    def mask(self, t0: int, t1: int) -> np.ndarray | None:
        """(t1 - t0, N) bool: observed entries of frames [t0, t1); None means all observed."""
        if self.phases is None:
            return None
        t = np.arange(t0, t1)[:, None]
        return (t - self.origin - self.phases[None, :]) % self.tu == 0

    def interpolate(self, block: np.ndarray, t0: int) -> np.ndarray:
        """Per-neuron linear interpolation of the observed samples of ``block`` (frames t0...).

        Reads only observed entries (unobserved ones may be anything, even NaN). Before a
        neuron's first / after its last observed sample in the block the nearest observed
        value is held. Non-causal within the block, as in the anchor's working approach.
        """
        T, N = block.shape
        if self.phases is None:
            return block.copy()
        out = np.empty((T, N), dtype=np.float32)
        t = np.arange(T)
        for phase in np.unique(self.phases):
            cols = np.flatnonzero(self.phases == phase)
            first = int((phase - (t0 - self.origin)) % self.tu)  # first observed local frame
            if first >= T:
                raise ConfigError(f"block of {T} frames is too short to observe every neuron (time_units={self.tu})")
            rows = np.arange(first, T, self.tu)
            values = block[rows][:, cols].astype(np.float32)  # observed samples only
            pos = np.clip((t - first) / self.tu, 0, len(rows) - 1)
            j = np.minimum(np.floor(pos).astype(np.int64), len(rows) - 1)
            w = (pos - j).astype(np.float32)[:, None]
            nxt = np.minimum(j + 1, len(rows) - 1)
            out[:, cols] = (1 - w) * values[j] + w * values[nxt]
        return out
