"""Config of `neurocast fly train-task`: task-training the fly visual system on optic flow (task: fly_task)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from neurocast.config import Section
from neurocast.schema.common import ExperimentBase
from neurocast.schema.simulation import FlyNetworkConfig
from neurocast.schema.stimuli import FLOW_FAMILIES, Gratings, Natural


class FlowStimulus(Section):
    """Training sequences whose motion field is known exactly at every column: naturalistic textures
    under self-motion (optionally with independently moving objects) and drifting gratings."""

    families: dict[str, float] = Field({"natural": 1.0, "gratings": 1.0},
                                       description="family -> weight (natural, gratings)")
    natural: Natural = Natural(objects=(0, 3))
    gratings: Gratings = Gratings()
    frames: int = Field(30, ge=4, description="frames per training sequence (back-propagated through)")
    burn_in: int = Field(8, ge=0, description="first frames of a sequence without flow loss (onset transient)")
    flow_scale_deg_s: float = Field(30.0, gt=0, description="flow is predicted in units of this speed")
    seed: int = Field(0, description="seed of the training sequences (validation uses seed + 1)")

    @model_validator(mode="after")
    def _burn(self):
        for k, w in self.families.items():
            if k not in FLOW_FAMILIES:
                raise ValueError(f"stimulus.families: {k!r} has no known motion field (use {', '.join(FLOW_FAMILIES)})")
            if not w > 0:
                raise ValueError(f"stimulus.families: weight of {k!r} must be > 0, got {w}")
        if not self.families:
            raise ValueError("stimulus.families: at least one family is needed")
        if self.burn_in >= self.frames:
            raise ValueError(f"stimulus.burn_in ({self.burn_in}) must be below stimulus.frames ({self.frames})")
        return self


class FlowDecoderConfig(Section):
    kind: Literal["ridge", "learned"] = Field(
        "ridge",
        description="ridge: linear readout solved in closed form, cross-fitted on the batch's halves (the network "
        "learns to make motion linearly decodable); learned: flyvis's two-layer hexagonal convolution trained with "
        "the network",
    )
    pooling: Literal["global", "local"] = Field(
        "global",
        description="ridge: global = self-motion (mean flow, rotation) from features averaged over the eye; "
        "local = flow at every column from its neighbourhood",
    )
    radius: int = Field(1, ge=0, description="neighbourhood (local ridge) or kernel radius (learned) in columns")
    ridge: float = Field(1e-3, gt=0, description="ridge penalty per sample (ridge)")
    fit: Literal["in_batch", "crossfit"] = Field(
        "in_batch",
        description="ridge, training: fitted and scored on the whole batch (gradient also through the fit), or "
        "cross-fitted on its halves; validation is always cross-fitted",
    )
    cell_types: list[str] | None = Field(
        ["T4a", "T4b", "T4c", "T4d", "T5a", "T5b", "T5c", "T5d"],
        description="cell types the decoder reads: T4/T5, which the lobula plate's tangential cells pool for "
        "self-motion (null: flyvis's 34 output types)",
    )
    hidden: int = Field(16, ge=1, description="channels of the hidden hexagonal convolution (learned)")
    dropout: float = Field(0.0, ge=0, lt=1, description="(learned)")


class ActivityPenalty(Section):
    """flyvis's activity penalty: per-type mean voltage of the central cells pulled towards a baseline."""

    weight: float = Field(1.0, ge=0, description="0 = off")
    baseline: float = Field(0.1, description="target mean voltage per cell type")
    below_weight: float = Field(1.0, ge=0, description="weight of a mean below the baseline")
    above_weight: float = Field(0.0, ge=0, description="weight of a mean above the baseline")


class FlyTaskTraining(Section):
    epochs: int = Field(16, ge=1)
    iterations_per_epoch: int = Field(50, ge=1, description="optimiser steps per epoch (fresh sequences each)")
    batch_size: int = Field(32, ge=2,
                            description="sequences per step (a global ridge readout needs many: one sample each)")
    lr_network: float = Field(3e-2, gt=0, description="Adam lr of the log time constants and log strengths")
    lr_bias: float = Field(1e-2, gt=0, description="Adam lr of the resting potentials")
    lr_decoder: float = Field(3e-3, gt=0, description="Adam lr of a learned decoder")
    grad_clip_max_norm: float = Field(0.0, ge=0, description="0 = off")
    steady_state_steps: int = Field(50, ge=0, description="grey steps from rest before every sequence (no gradient)")
    validation_sequences: int = Field(32, ge=2, description="fixed validation sequences (cross-fitted readout)")
    save_checkpoint_every_n_epochs: int = Field(5, ge=0)
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")


class FlyTaskConfig(ExperimentBase):
    """Train the connectome-constrained network's free parameters to estimate optic flow (`neurocast fly train-task`).
    """

    task: Literal["fly_task"] = "fly_task"
    network: FlyNetworkConfig = FlyNetworkConfig(extent=3, parameters="untrained", excitatory_gain=0.9,
                                                 inhibitory_factor=2.0)
    dt: float = Field(0.02, gt=0, description="Euler step and frame interval (seconds)")
    stimulus: FlowStimulus = FlowStimulus()
    decoder: FlowDecoderConfig = FlowDecoderConfig()
    penalty: ActivityPenalty = ActivityPenalty()
    training: FlyTaskTraining = FlyTaskTraining()
    @model_validator(mode="after")
    def _decoder(self):
        if self.decoder.kind == "learned" and self.decoder.pooling != "local":
            raise ValueError("decoder.pooling must be local for a learned decoder (flyvis's per-column flow)")
        return self

    diagnostics_extent: int = Field(2, ge=1, le=15,
                                    description="extent of the DSI / realism check run at every validation")
