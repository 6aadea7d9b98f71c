"""Config of latent-dynamics experiments (task: latent).

Names follow the anchor (NeuralGraph LatentEvolution) so its command lines work, e.g.
``--training.evolve-multiple-steps 5``, ``--training.unconnected-to-zero.num-neurons 100``,
``--training.acquisition-mode.mode staggered_random --training.acquisition-mode.seed 42``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from neurocast.config import Section
from neurocast.schema.common import ExperimentBase

# ---------------------------------------------------------------------------- data


class TimeRange(Section):
    """Frames [train_start, train_end) train; [validation_start, validation_end) validate."""

    train_start: int = Field(0, ge=0)
    train_end: int | None = Field(None, ge=1, description="None: validation_start")
    validation_start: int | None = Field(None, ge=0, description="None: last validation_fraction of the recording")
    validation_end: int | None = Field(None, ge=1, description="None: end of the recording")
    validation_fraction: float = Field(0.2, gt=0, lt=1)


class CrossValidationSet(Section):
    """Another recording (e.g. other stimulus families) used only for evaluation."""

    recording: str = Field(..., description="recording name in the dataset folder, or a path to a store/file")
    name: str | None = Field(None, description="display name (default: the recording name)")
    start: int = Field(0, ge=0)
    end: int | None = Field(None, ge=1)


class LatentData(Section):
    simulation: str | None = Field(None, description="simulation config to run (or reuse): its dataset is the data")
    path: str | None = Field(None, description="dataset folder or recording store/file (instead of simulation)")
    train_recording: str = Field("train", description="recording (session) name to train on")
    channel: str = Field("voltage", description="channel to model: voltage, calcium, fluorescence, ...")
    split: TimeRange = TimeRange()
    cross_validation: list[CrossValidationSet] = Field(default_factory=list)
    normalization: Literal["none", "center", "center_scale", "zscore"] = Field(
        "center_scale",
        description="fitted on observed training frames only: center = per-neuron mean; center_scale = "
        "per-neuron mean and one global std; zscore = per-neuron mean and std (floored)",
    )
    chunk_frames: int = Field(65536, ge=256, description="frames held in memory at once when streaming from a store")

    @model_validator(mode="after")
    def _source(self):
        if (self.simulation is None) == (self.path is None):
            raise ValueError("give exactly one of data.simulation (a simulation config) or data.path")
        return self


# ---------------------------------------------------------------------------- model


class MLPParams(Section):
    num_hidden_units: int = Field(128, ge=1)
    num_hidden_layers: int = Field(1, ge=0)
    use_input_skips: bool = True
    l1_reg_loss: float = Field(0.0, ge=0, description="L1 weight penalty: coeff x sum over tensors of mean|w|")


class EvolverParams(MLPParams):
    activation: str = Field("Tanh", description="torch.nn activation of the evolver")
    zero_init: bool = Field(True, description="zero the last layer so the evolver starts as the identity")


class StimulusEncoderParams(Section):
    num_hidden_units: int = Field(64, ge=1)
    num_hidden_layers: int = Field(1, ge=0)
    num_output_dims: int = Field(32, ge=1)
    use_input_skips: bool = True


class LatentModelConfig(Section):
    latent_dims: int = Field(64, ge=1)
    activation: str = Field("ReLU", description="activation of encoder, decoder and stimulus encoder")
    use_batch_norm: bool = Field(False, description="batch norm in plain MLPs (hurt in the anchor)")
    encoder: MLPParams = MLPParams()
    decoder: MLPParams = MLPParams()
    evolver: EvolverParams = EvolverParams()
    stimulus_encoder: StimulusEncoderParams = StimulusEncoderParams()
    use_stimulus: bool = Field(True, description="drive the evolver with the recording's stimulus")

    @model_validator(mode="after")
    def _symmetric(self):
        e, d = self.encoder, self.decoder
        if (e.num_hidden_units, e.num_hidden_layers, e.use_input_skips) != (
            d.num_hidden_units, d.num_hidden_layers, d.use_input_skips
        ):
            raise ValueError("decoder must mirror the encoder: same num_hidden_units, num_hidden_layers, "
                             "use_input_skips")
        return self


# ---------------------------------------------------------------------------- training


class AllTimePoints(Section):
    mode: Literal["all", "all_time_points"] = "all"


class TimeAligned(Section):
    mode: Literal["time_aligned"] = "time_aligned"


class StaggeredRandom(Section):
    mode: Literal["staggered_random"] = "staggered_random"
    seed: int = 42


AcquisitionMode = Annotated[Union[AllTimePoints, TimeAligned, StaggeredRandom], Field(discriminator="mode")]


class UnconnectedToZero(Section):
    num_neurons: int = Field(0, ge=0, description="K neurons sampled per batch (0 = off)")
    loss_coeff: float = Field(1.0, ge=0)


class LatentTraining(Section):
    time_units: int = Field(1, ge=1, description="observation interval: evolver steps between observations")
    evolve_multiple_steps: int = Field(1, ge=1, description="loss at tu, 2tu, ..., ems*tu")
    intermediate_loss_steps: list[int] = Field(default_factory=list, description="extra loss steps inside (0, tu)")
    acquisition_mode: AcquisitionMode = AllTimePoints()
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    optimizer: str = Field("Adam", description="any torch.optim class name")
    optimizer_kwargs: dict[str, float | int | bool | list[float]] = Field(default_factory=dict)
    loss_function: Literal["mse", "huber", "l1"] = "mse"
    grad_clip_max_norm: float = Field(0.0, ge=0, description="global gradient-norm clip (0 = off)")
    reconstruction_warmup_epochs: int = Field(0, ge=0, description="extra epochs: encoder/decoder only")
    ems_warmup_epochs: int = Field(0, ge=0, description="ramp the loss multiples from 1 to ems over these epochs")
    unconnected_to_zero: UnconnectedToZero = UnconnectedToZero()
    data_passes_per_epoch: int = Field(
        1, ge=1, description="passes per epoch over the training windows on the observation grid (one per tu frames, "
        "in every acquisition mode)"
    )
    seed: int = 42
    save_checkpoint_every_n_epochs: int = Field(10, ge=0, description="0 = only latest/best/final")
    validation_windows: int = Field(2048, ge=1, description="validation windows (evenly spaced) per evaluation")
    compile: bool = Field(False, description="torch.compile the model (GPUs)")
    use_tf32_matmul: bool = Field(False, description="TF32 matrix multiplies on CUDA")
    device: str = Field("auto", description="auto (CUDA if available), cpu, cuda, cuda:N")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")

    @model_validator(mode="after")
    def _consistent(self):
        tu = self.time_units
        for k in self.intermediate_loss_steps:
            if not 0 < k < tu:
                raise ValueError(f"intermediate_loss_steps must lie strictly between 0 and time_units={tu}, got {k}")
        mode = self.acquisition_mode.mode
        if self.intermediate_loss_steps and mode != "all" and mode != "all_time_points":
            raise ValueError(
                f"intermediate_loss_steps need every frame observed (acquisition mode 'all'); with {mode!r} "
                "the frames inside an interval are not observed"
            )
        if self.unconnected_to_zero.num_neurons > 0 and mode == "staggered_random":
            raise ValueError(
                "unconnected_to_zero is not defined for staggered_random acquisition (the input is an "
                "interpolation across neurons observed at different times); use time_aligned or all"
            )
        if self.ems_warmup_epochs and self.evolve_multiple_steps == 1:
            raise ValueError("ems_warmup_epochs needs evolve_multiple_steps > 1")
        return self

    @property
    def window(self) -> int:
        """Evolver steps a training window spans: time_units x evolve_multiple_steps."""
        return self.time_units * self.evolve_multiple_steps

    @property
    def loss_multiples(self) -> list[int]:
        """The steps with a loss at every observation: tu, 2 tu, ..., ems x tu."""
        return [m * self.time_units for m in range(1, self.evolve_multiple_steps + 1)]

    @property
    def loss_steps(self) -> list[int]:
        """Every step with a loss, in order: the multiples and the intermediate loss steps."""
        return sorted(set(self.loss_multiples) | set(self.intermediate_loss_steps))


class EarlyStopping(Section):
    """Stop when roll-outs on held-out data stop improving (off by default)."""

    enabled: bool = False
    every_epochs: int = Field(5, ge=1, description="run the roll-out evaluation every K epochs")
    dataset: str | None = Field(None,
                                description="'val' or a cross-validation name (default: the first CV set, else val)")
    metric: Literal["rollout_mse", "stable_horizon"] = "rollout_mse"
    min_improvement: float = Field(0.1, ge=0, lt=1, description="relative improvement that counts (0.1 = 10%)")
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    horizon: int | None = Field(None, ge=1, description="roll-out length (default: eval.horizon)")
    n_starts: int = Field(10, ge=1)


class LatentBaselinesConfig(Section):
    """The linear baselines every roll-out evaluation is compared with (fitted on observed training frames)."""

    enabled: bool = True
    stimulus_lags: int = Field(20, ge=1, description="stimulus-only ridge: stimulus frames t-1..t-K before each frame")
    stimulus_components: int = Field(32, ge=1, description="spatial principal components of the stimulus used")
    lds_dims: int = Field(64, ge=1, description="PCA latent dimension of the linear dynamical model")


class LatentEval(Section):
    horizon: int | None = Field(None, ge=1, description="roll-out steps (default: max(2000, 10 x tu x ems))")
    n_starts: int = Field(20, ge=1, description="seeded roll-out start points per dataset")
    seed: int = 0
    rollouts: list[Literal["latent", "activity"]] = Field(["latent", "activity"], min_length=1)
    trace_neurons_per_type: int = Field(1, ge=1)
    baselines: LatentBaselinesConfig = LatentBaselinesConfig()
    input_cell_types: list[str] | None = Field(
        None, description="cell types the stimulus drives directly, left out of the 'without inputs' metrics "
        "(default: the recording's input roles: R1-R8 for the simulated fly)"
    )
    early_stopping: EarlyStopping = EarlyStopping()


class LatentExperiment(ExperimentBase):
    """Latent-dynamics experiment: encoder -> evolver -> decoder trained with `neurocast train`."""

    task: Literal["latent"] = "latent"
    data: LatentData
    model: LatentModelConfig = LatentModelConfig()
    training: LatentTraining = LatentTraining()
    eval: LatentEval = LatentEval()

    def rollout_horizon(self) -> int:
        return self.eval.horizon or max(2000, 10 * self.training.window)
