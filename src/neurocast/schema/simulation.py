"""Config of `neurocast simulate` for the fly visual system (task: fly_simulation)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from neurocast.config import Section
from neurocast.schema.stimuli import StimulusSet

Channel = Literal["voltage", "calcium", "fluorescence"]


class FlyvisNetwork(Section):
    """A task-trained network of flyvis's ensemble, as `flyvis download-pretrained` leaves it."""

    flyvis: str = Field(...,
                        description="flyvis model directory (.../flow/0000/000) or ensemble directory (.../flow/0000, "
                                    "with member)")
    member: int | None = Field(None, ge=0, description="ensemble member index (folder NNN of the ensemble directory)")


class FlyNetworkConfig(Section):
    extent: int = Field(8, ge=1, le=40, description="lattice radius in columns (3n(n+1)+1 columns)")
    connectome_file: str | None = Field(None, description="connectome JSON (default: the flyvis wheel's)")
    n_syn_fill: float = Field(1.0, ge=0, description="synapses assumed at offsets missing inside the hull")
    parameters: Literal["trained", "untrained"] | FlyvisNetwork = Field(
        "trained",
        description="trained: neurocast's own task-trained parameters (shipped); untrained: flyvis's initialisation; "
        "{flyvis: DIR, member: K}: a network of flyvis's pretrained ensemble",
    )
    parameters_file: str | None = Field(None,
                                        description="JSON/YAML with per-type / per-edge-type values (override the "
                                                    "above)")
    seed: int = Field(0, description="untrained only: seed of the resting-potential draw (0 = flyvis's values)")
    strength_scale: float = Field(0.01, gt=0, description="untrained only: strength = scale / mean synapse count")
    excitatory_gain: float | None = Field(
        None, gt=0,
        description="untrained only: rescale strengths so the excitatory weights' spectral radius is this "
        "(<1: bounded)",
    )
    inhibitory_factor: float = Field(1.0, gt=0, description="untrained only: extra factor on inhibitory strengths")
    deg_per_column: float = Field(5.8, gt=0, description="visual angle between neighbouring columns")

    @model_validator(mode="after")
    def _untrained_only(self):
        if self.parameters != "untrained":
            changed = [k for k in ("seed", "strength_scale", "excitatory_gain", "inhibitory_factor")
                       if getattr(self, k) != type(self).model_fields[k].default]
            if changed:
                raise ValueError(
                    f"network.{changed[0]} shapes flyvis's untrained initialisation; with parameters="
                    f"{self.parameters if isinstance(self.parameters, str) else 'flyvis'} it would change trained "
                    "values (set network.parameters: untrained, or drop it)"
                )
        return self


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
    diagnostics: bool = Field(
        True, description="measure the network's realism (DSI of T4/T5, forgetting time, variance shares) into "
        "diagnostics.json"
    )
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
