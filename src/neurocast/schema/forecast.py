"""Config of multi-session forecasting experiments (task: forecast, task: forecast_compare)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from neurocast.config import Section
from neurocast.schema.common import ExperimentBase

# ---------------------------------------------------------------------------- data


class DatasetSpec(Section):
    name: str = Field(..., min_length=1, description="dataset name (prefix of its session ids)")
    path: str | None = Field(None, description="file or folder of sessions, relative to data.root unless absolute")
    simulation: str | None = Field(None, description="simulation config to run (or reuse) instead of a path")
    simulation_overrides: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description="fields of the simulation config replaced here, e.g. {n_sessions: 32} "
        "(CLI: --data.datasets.0.simulation-overrides.n_sessions 32)"
    )
    format: str | None = Field(None, description="force a source (see `neurocast data formats`)")
    dt: float | None = Field(None, gt=0, description="frame interval for files that do not store it (zebrafish CSV)")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="source options, as `neurocast data info --option`: e.g. series: DfOverF/plane0 (nwb), "
        "trace: trace_original (wormwideweb), stimulus: all (nwb)",
    )
    resample_dt: float | None = Field(None, gt=0, description="resample every session to this frame interval")
    sessions: list[str] | None = Field(None, description="only these session ids (default: all in the folder)")
    weight: float = Field(1.0, gt=0, description="weight of this dataset's loss")

    @model_validator(mode="after")
    def _source(self):
        if (self.path is None) == (self.simulation is None):
            raise ValueError(f"dataset {self.name!r}: give exactly one of path or simulation")
        if self.simulation_overrides and self.simulation is None:
            raise ValueError(f"dataset {self.name!r}: simulation_overrides need a simulation (not a path)")
        return self


class FilterSpec(Section):
    kind: Literal["none", "lowpass", "bandpass", "highpass"] = "none"
    low_hz: float | None = Field(None, gt=0, description="lower cut-off (bandpass, highpass)")
    high_hz: float | None = Field(None, gt=0, description="upper cut-off (lowpass, bandpass)")
    order: int = Field(4, ge=1, le=10)
    zero_phase: bool = Field(
        True, description="forward-backward (non-causal) within each split piece; false = causal forward filter"
    )


class ForecastData(Section):
    root: str | None = Field(None, description="base folder of relative dataset paths")
    datasets: list[DatasetSpec] = Field(..., min_length=1)
    context: int = Field(48, ge=1, description="context frames C")
    horizon: int = Field(16, ge=1, description="forecast frames P")
    block_length: int = Field(1000, ge=10, description="each session is cut into blocks of this many frames")
    split: tuple[float, float, float] = Field((0.6, 0.2, 0.2), description="train/val/test fractions inside each block")
    train_stride: int = Field(1, ge=1)
    eval_stride: int = Field(1, ge=1)
    normalization: Literal["zscore", "center", "none"] = Field(
        "zscore", description="per unit, fitted on the frames that normalization_fit names"
    )
    normalization_fit: Literal["train", "whole_recording"] = Field(
        "train",
        description="frames the normalisation and PCA are fitted on (and that filters run over): train = training "
        "pieces only (filters inside each piece); whole_recording = every frame of the session, the published POCO "
        "protocol, which leaks validation/test statistics into the inputs (labelled LEAKING in summaries and reports)",
    )
    pca_components: int | None = Field(None, ge=1, description="project onto the leading PCs of the training frames")
    filter: FilterSpec = FilterSpec()
    downsample: int = Field(1, ge=1, description="temporal downsampling by block averaging (before splitting)")
    held_out_sessions: list[str] = Field(
        default_factory=list, description="session ids (dataset/session) never used in training (adaptation targets); "
        "also dataset/last:K or dataset/first:K (the last / first K session ids in sorted order) and dataset/A..B "
        "(ids from A to B, inclusive, in sorted order); the dataset/ prefix may be left out with one dataset"
    )

    @field_validator("split")
    @classmethod
    def _split(cls, v):
        if any(f < 0 for f in v) or abs(sum(v) - 1) > 1e-6 or v[0] <= 0:
            raise ValueError(f"split fractions must be >= 0, the train fraction > 0, and sum to 1, got {v}")
        return v

    @model_validator(mode="after")
    def _names(self):
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique, got {names}")
        return self


# ---------------------------------------------------------------------------- models


class PocoConfig(Section):
    """POCO: Perceiver over the whole population conditioning a per-unit FiLM MLP."""

    kind: Literal["poco"] = "poco"
    token_length: int = Field(16, ge=1, description="frames per token (compression factor); divides the context")
    hidden: int = Field(128, ge=8, description="Perceiver model dimension d")
    latents: int = Field(8, ge=1, description="latent tokens")
    self_attention_layers: int = Field(1, ge=0)
    heads: int = Field(16, ge=1, description="self-attention heads")
    head_dim: int = Field(64, ge=2)
    cross_heads: int = Field(1, ge=1)
    ffn_mult: int = Field(4, ge=1)
    rotary_t_max: float = Field(100.0, gt=0, description="longest rotary period (frames); t_min = t_max / 1000")
    ffn_dropout: float = Field(0.2, ge=0, lt=1)
    residual_dropout: float = Field(0.4, ge=0, lt=1, description="on the latent self-attention and FFN residuals")
    conditioning_dim: int = Field(1024, ge=1, description="MLP hidden width (FiLM-modulated)")
    conditioning_layers: int = Field(1, ge=1)
    session_embedding: bool = Field(True, description="add session and dataset embeddings to the unit embedding")
    conditioning: Literal["film", "none"] = Field(
        "film", description="film = POCO; none = Perceiver-only ablation (POYO: linear readout of the unit vector)"
    )
    input_norm: Literal["none", "last", "mean", "mean_std"] = Field(
        "none",
        description="per-window, per-unit normalisation of the context, undone on the forecast (none = POCO as "
        "published; last / mean subtract the last value / the mean; mean_std also divides by the std, as RevIN)",
    )
    learned_init: bool = Field(
        False, description="learnable initial embeddings for new sessions (set automatically by meta-training)"
    )
    learned_inner_lr: float | None = Field(
        None, gt=0, description="learnable per-group inner-loop step sizes starting at this value (Meta-SGD; set "
        "automatically by training.meta.learn_inner_lr)"
    )

    @model_validator(mode="after")
    def _dims(self):
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        return self


class MLPForecaster(Section):
    """Population-free ablation: one univariate MLP shared by every unit."""

    kind: Literal["mlp"] = "mlp"
    hidden: int = Field(1024, ge=1)
    layers: int = Field(1, ge=1)


class NLinearConfig(Section):
    kind: Literal["nlinear"] = "nlinear"


class DLinearConfig(Section):
    kind: Literal["dlinear"] = "dlinear"
    kernel: int = Field(25, ge=1, description="moving-average kernel (odd)")


class TSMixerConfig(Section):
    kind: Literal["tsmixer"] = "tsmixer"
    blocks: int = Field(2, ge=1)
    ff_dim: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class GRUConfig(Section):
    kind: Literal["gru"] = "gru"
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    residual: bool = Field(True, description="forecast the change from the last context frame (false: raw values)")


ForecastModelConfig = Annotated[
    Union[PocoConfig, MLPForecaster, NLinearConfig, DLinearConfig, TSMixerConfig, GRUConfig],
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------- training


AdaptGroup = Literal["embeddings", "units", "session", "film", "output", "backbone", "all"]


def _groups(v):
    """A parameter-group list may be written as one name ("embeddings") or a list."""
    return [v] if isinstance(v, str) else v


class MetaConfig(Section):
    """Meta-learning of fast adaptation (training.mode fomaml / e2e_ttt)."""

    inner_lr: float = Field(1e-2, gt=0, description="inner-loop step size (SGD: ~1-10 for embeddings; Adam: ~1e-2)")
    inner_optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="inner-loop update: sgd, or adam (bias-corrected, written functionally so that E2E-TTT "
        "differentiates through it); test-time adaptation of the model uses the same by default"
    )
    inner_steps: int = Field(3, ge=1)
    meta_batch_size: int = Field(4, ge=1, description="sessions per meta-batch")
    support_windows: int = Field(32, ge=1, description="support windows per session (earliest in its training part)")
    query_windows: int = Field(32, ge=1, description="query windows per session (strictly later than the support)")
    adapt: list[AdaptGroup] = Field(["embeddings"], min_length=1, description="parameter groups adapted in the inner "
                                    "loop (as eval.adaptation.params)")
    learn_inner_lr: bool = Field(False, description="learn one inner step size per parameter group (Meta-SGD), "
                                 "starting at inner_lr")
    support_sampling: Literal["spread", "contiguous"] = Field(
        "spread", description="spread: support windows drawn anywhere before the split time; contiguous: a run of "
        "consecutive windows ending there, like a few-shot budget at test time"
    )
    init: Literal["learned", "mean", "random"] = Field(
        "learned", description="inner-loop start for a session's embeddings (learned: meta-learned init vectors)"
    )
    val_sessions: int = Field(8, ge=1, description="training sessions adapted for validation (their val split)")
    activation_checkpointing: bool = Field(False, description="recompute inner-loop activations (saves memory)")
    accumulation: int = Field(1, ge=1, description="meta-batches per outer update (gradient accumulation)")
    bf16: bool = Field(False, description="bf16 autocast on CUDA")

    @field_validator("adapt", mode="before")
    @classmethod
    def _adapt(cls, v):
        return _groups(v)


class ForecastTraining(Section):
    mode: Literal["standard", "fomaml", "e2e_ttt"] = "standard"
    init_from: str | None = Field(
        None, description="start from this trained forecasting run's weights (run or seed directory, or a checkpoint "
        "file): parameters of matching name and shape are loaded; a meta-learned init starts at the mean of its "
        "embeddings"
    )
    max_steps: int = Field(2000, ge=1, description="optimiser steps")
    batch_size: int = Field(64, ge=1, description="windows per dataset per step")
    learning_rate: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: str = Field("AdamW", description="any torch.optim class name")
    optimizer_kwargs: dict[str, float | int | bool | list[float]] = Field(default_factory=lambda: {"amsgrad": True})
    grad_clip: float = Field(5.0, ge=0)
    val_every: int = Field(100, ge=1, description="validate (and checkpoint) every N steps")
    val_windows: int = Field(4096, ge=1, description="validation windows per session at most (evenly spaced)")
    seeds: list[int] = Field([0], min_length=1, description="one model per seed; tables give mean and 95% interval")
    save_checkpoint_every: int = Field(0, ge=0,
                                       description="keep a checkpoint every N validations (0: latest/best/final)")
    device: str = "auto"
    num_threads: int | None = Field(None, ge=1)
    meta: MetaConfig = MetaConfig()


class AdaptationConfig(Section):
    """Adapting a trained model to a new session (neurocast adapt, and the protocol after training)."""

    params: list[AdaptGroup] = Field(
        ["embeddings"], min_length=1, description="parameter groups adapted: embeddings (= units + session), units, "
        "session, film (FiLM alpha/beta), output (output layer), backbone (everything else), all"
    )
    init: Literal["auto", "learned", "random", "mean"] = Field(
        "auto", description="new embeddings: learned (meta-trained models), mean of the trained ones, random; "
        "auto picks"
    )
    steps: int = Field(100, ge=0, description="adaptation steps K of the curve")
    optimizer: Literal["auto", "adam", "sgd"] = Field(
        "auto", description="auto: the meta inner loop's optimizer for meta-trained models, Adam for standard ones"
    )
    lr: float | None = Field(
        None, gt=0, description="step size; default: the meta inner loop's (its learned step sizes with "
        "meta.learn_inner_lr) for meta-trained models adapted with their inner optimizer, else 1e-3 (Adam)"
    )
    normalization: Literal["session", "support"] = Field(
        "session", description="session: the session's statistics from its whole training part (unlabelled activity, "
        "as for training sessions); support: statistics of the support frames only (unreliable for few-shot budgets)"
    )
    holdout: float = Field(
        0.2, ge=0, lt=1, description="fraction of the support windows held back (the latest, with targets no fitted "
        "window saw) for early stopping; 0 = off; budgets under ~horizon + 2 windows run without"
    )
    support_windows: int | None = Field(None, ge=1, description="budget in windows from the start of the training part")
    support_seconds: float | None = Field(None, gt=0, description="budget in seconds of recording")
    batch_size: int = Field(64, ge=1, description="support windows per step (all of them when fewer)")
    eval_every: int = Field(1, ge=1, description="score the query split every N steps")
    eval_steps: list[int] | None = Field(
        None, description="score the query split after exactly these steps instead (plus 0 and the last), e.g. "
        "[1, 2, 3, 5, 10, 20, 50] to resolve fast early adaptation"
    )
    long_steps: int = Field(300, ge=0, description="long fine-tuning whose gain defines steps-to-95% (0: skip it and "
                            "refer to the end of the curve)")
    budgets: list[int | Literal["all"]] = Field(
        [10, 50, "all"], description="few-shot support budgets (windows, or all of the training part) after training"
    )
    budget_seconds: list[float] = Field(default_factory=list, description="few-shot budgets in seconds of recording")
    query_windows: int = Field(512, ge=1, description="query windows (later than the support) scored per session")
    baselines: list[Literal["nlinear", "scratch"]] = Field(
        ["nlinear", "scratch"], description="baselines on the same query windows: NLinear (closed form, on the "
        "training sessions and on the support), POCO trained from scratch on the support"
    )
    scratch_steps: int = Field(200, ge=1, description="training steps of the from-scratch POCO")
    scratch_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the from-scratch POCO")

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, v):
        return _groups(v)


class ForecastEval(Section):
    trace_units: int = Field(6, ge=1, description="units shown in the trace figure")
    adaptation: AdaptationConfig = AdaptationConfig()


class ForecastExperiment(ExperimentBase):
    """Multi-session forecasting experiment (POCO or a baseline), trained with `neurocast train`."""

    task: Literal["forecast"] = "forecast"
    data: ForecastData
    model: ForecastModelConfig = PocoConfig()
    training: ForecastTraining = ForecastTraining()
    eval: ForecastEval = ForecastEval()

    @property
    def trained_models(self) -> dict[str | None, ForecastModelConfig]:
        """The models a run trains, by label (None: the run's only model, trained in the run directory itself)."""
        return {None: self.model}


class ForecastCompare(ExperimentBase):
    """Several forecasting models on the same data and seeds, one table (`neurocast train`)."""

    task: Literal["forecast_compare"] = "forecast_compare"
    data: ForecastData
    models: dict[str, ForecastModelConfig] = Field(..., min_length=1, description="label -> model")
    training: ForecastTraining = ForecastTraining()
    eval: ForecastEval = ForecastEval()

    @property
    def trained_models(self) -> dict[str | None, ForecastModelConfig]:
        """The models a run trains, by label (each in ``models/<label>/`` of the run directory)."""
        return dict(self.models)


class TTTCompare(ForecastExperiment):
    """Standard training + fine-tuning vs FOMAML vs E2E-TTT on the same held-out sessions."""

    task: Literal["ttt_compare"] = "ttt_compare"
    methods: list[Literal["standard", "fomaml", "e2e_ttt"]] = Field(
        ["standard", "fomaml", "e2e_ttt"], min_length=1, description="training modes compared (one run directory each)"
    )
    meta_max_steps: int | None = Field(None, ge=1, description="training.max_steps of the meta-trained methods "
                                       "(default: the same as standard)")
    meta_from_standard: bool = Field(
        False, description="meta-train fomaml / e2e_ttt from the standard method's trained model of the same seed "
        "(training.init_from); needs standard first in methods"
    )

    @model_validator(mode="after")
    def _held_out(self):
        if not self.data.held_out_sessions:
            raise ValueError("ttt_compare needs data.held_out_sessions (the sessions every method adapts to)")
        if self.meta_from_standard and (not self.methods or self.methods[0] != "standard"):
            raise ValueError("meta_from_standard needs 'standard' as the first of methods")
        return self
