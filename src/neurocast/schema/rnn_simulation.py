"""Config of the multi-session random-RNN simulation (task: rnn_simulation).

A chaotic rate network of N units (Sompolinsky et al. 1988; the multi-session variant of
POCO's simulated data, after Perich et al. / CURBD) is simulated once per session:

    h <- h + (dt / tau) (-h + J_s tanh(h)) + noise_std sqrt(2 dt / tau) xi,   xi ~ N(0, I)
    J_s = (g / sqrt(N)) (sqrt(1 - eta^2) T + eta Z_s),     T, Z_s ~ N(0, 1) entries

T is a template shared by every session (from ``template_seed``), Z_s is the session's own
perturbation (from ``seed`` and the session index); eta = ``connectivity_noise`` sets how
different the sessions' networks are (0: identical, 1: independent), while the variance
of every J_s entry stays g^2 / N. The process noise is scaled so that, alone, it would
give h a stationary standard deviation of ``noise_std``. Each session records
r = tanh(h) of its own random subset of ``observed_units`` units, block-averaged over
``downsample`` steps (frame interval dt * downsample), after ``warmup_s`` of discarded
transient from h0 ~ U(-1, 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from neurocast.config import Section


class RNNSimulationConfig(Section):
    """Multi-session random RNN dataset (one store per session)."""

    task: Literal["rnn_simulation"] = "rnn_simulation"
    name: str = Field(..., min_length=1, description="dataset name (output folder <output_root>/<name>-<hash>)")
    description: str = ""
    output_root: str = Field("data/sim", description="folder for simulated datasets")
    n_units: int = Field(300, ge=2, description="units N of the network")
    n_sessions: int = Field(8, ge=1, description="sessions, each with its own connectivity, state and noise")
    observed_units: int = Field(150, ge=1, description="units each session records (its own random subset)")
    gain: float = Field(2.0, gt=0, description="g: connectivity gain (> 1: chaotic without noise)")
    tau: float = Field(0.1, gt=0, description="time constant (seconds)")
    dt: float = Field(0.01, gt=0, description="Euler step (seconds)")
    noise_std: float = Field(0.1, ge=0, description="process noise: per-step std noise_std * sqrt(2 dt / tau)")
    connectivity_noise: float = Field(
        0.5, ge=0, le=1, description="eta: weight of each session's own random part of J (0: all sessions share J)"
    )
    template_seed: int = Field(0, ge=0, description="seed of the template connectivity T shared by all sessions")
    seed: int = Field(0, ge=0, description="seed of the sessions' own connectivity, initial state, noise and subsets")
    duration_s: float = Field(204.8, gt=0, description="recorded length of every session (seconds)")
    downsample: int = Field(5, ge=1, description="steps block-averaged into one recorded frame")
    warmup_s: float = Field(1.0, ge=0, description="simulated and discarded before recording (seconds)")

    @property
    def frame_dt(self) -> float:
        """Frame interval of the recordings (seconds)."""
        return self.dt * self.downsample

    @property
    def frames(self) -> int:
        """Recorded frames per session: duration_s / (dt * downsample), rounded."""
        return int(round(self.duration_s / self.frame_dt))

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_s / self.dt))

    @model_validator(mode="after")
    def _consistent(self):
        if self.observed_units > self.n_units:
            raise ValueError(
                f"observed_units ({self.observed_units}) must not exceed n_units ({self.n_units})"
            )
        if self.dt > self.tau:
            raise ValueError(f"dt ({self.dt}) must not exceed tau ({self.tau}): the Euler step would overshoot")
        if self.frames < 2:
            raise ValueError(
                f"duration_s ({self.duration_s}) gives {self.frames} frame(s) of dt * downsample = "
                f"{self.frame_dt:g} s; at least 2 are needed"
            )
        return self
