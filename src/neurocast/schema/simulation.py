"""Config of `neurocast simulate` for the fly visual system (task: fly_simulation)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from neurocast.config import Section
from neurocast.sim.stimuli import StimulusSet

Channel = Literal["voltage", "calcium", "fluorescence"]


class FlyNetworkConfig(Section):
    extent: int = Field(8, ge=1, le=40, description="lattice radius in columns (3n(n+1)+1 columns)")
    connectome_file: str | None = Field(None, description="connectome JSON (default: the flyvis wheel's)")
    n_syn_fill: float = Field(1.0, ge=0, description="synapses assumed at offsets missing inside the hull")
    parameters_file: str | None = Field(None, description="JSON/YAML with per-type / per-edge-type values")
    seed: int = Field(0, description="seed of the resting-potential draw (0 = flyvis's values)")
    strength_scale: float = Field(0.01, gt=0, description="flyvis init: strength = scale / mean synapse count")
    excitatory_gain: float | None = Field(
        None, gt=0, description="rescale strengths so the excitatory weights' spectral radius is this (<1: bounded)"
    )
    inhibitory_factor: float = Field(1.0, gt=0, description="extra factor on inhibitory strengths")
    deg_per_column: float = Field(5.8, gt=0, description="visual angle between neighbouring columns")


class FlyDynamicsConfig(Section):
    dt: float = Field(0.02, gt=0, description="Euler step and frame interval (seconds)")
    noise_std: float = Field(0.0, ge=0, description="process noise std added to every voltage each step")
    warmup_s: float = Field(2.0, ge=0, description="grey pre-stimulus to reach the steady state")
    grey: float = Field(0.5, ge=0, le=1)
    tau_calcium: float = Field(0.5, gt=0, description="calcium time constant (seconds)")
    fluorescence_gain: float = 1.0
    fluorescence_offset: float = 0.0


class FlyRecordingSpec(Section):
    """One recording of the simulated dataset (e.g. training set, a cross-validation set)."""

    duration_s: float = Field(..., gt=0, description="length of each sequence in seconds")
    sequences: int = Field(1, ge=1, description="independent sequences, simulated in parallel and concatenated")
    stimulus: StimulusSet = StimulusSet()
    noise_std: float | None = Field(None, ge=0, description="overrides dynamics.noise_std for this recording")
    seed: int = Field(0, description="seed of the process noise")


class FlySimulationConfig(Section):
    """Simulated fly visual system dataset (`neurocast simulate`)."""

    task: Literal["fly_simulation"] = "fly_simulation"
    name: str = Field(..., min_length=1, description="dataset name (output folder <output_root>/<name>-<hash>)")
    description: str = ""
    output_root: str = Field("data/sim", description="folder for simulated datasets")
    network: FlyNetworkConfig = FlyNetworkConfig()
    dynamics: FlyDynamicsConfig = FlyDynamicsConfig()
    channels: list[Channel] = Field(["voltage", "calcium", "fluorescence"], min_length=1)
    primary: Channel = "voltage"
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    batch: int = Field(16, ge=1, le=256, description="sequences simulated together (one sparse product per step)")
    block_steps: int | None = Field(None, ge=1, description="frames per written block (default: one store chunk)")
    recordings: dict[str, FlyRecordingSpec] = Field(..., description="recording name -> spec; 'train' by convention")

    @field_validator("recordings")
    @classmethod
    def _names(cls, v):
        import re

        if not v:
            raise ValueError("at least one recording is needed")
        for k in v:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", k):
                raise ValueError(f"recording name {k!r} must be letters, digits, _ . -")
        return v

    @model_validator(mode="after")
    def _primary(self):
        if self.primary not in self.channels:
            raise ValueError(f"primary channel {self.primary!r} is not one of channels {self.channels}")
        return self
