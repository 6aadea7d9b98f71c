"""Sections shared by every experiment config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from neurocast.config import Section


class WandbConfig(Section):
    enabled: bool = Field(False, description="log to Weights & Biases (needs `pip install wandb`)")
    project: str = "neurocast"
    entity: str | None = None
    mode: Literal["online", "offline"] = Field("offline", description="offline works without network; sync later")
    group: str | None = None


class LoggingConfig(Section):
    tensorboard: bool = Field(True, description="write TensorBoard event files into the run directory")
    wandb: WandbConfig = WandbConfig()
    progress: bool = Field(True, description="progress bars (turned off by --quiet)")


class ExperimentBase(Section):
    """Fields every runnable experiment config has."""

    task: str
    name: str = Field(..., description="experiment name: runs go to <runs_dir>/<name>/", min_length=1)
    description: str = Field("", description="one line shown by `neurocast experiments`")
    runs_dir: str = Field("runs", description="folder that holds run directories")
    logging: LoggingConfig = LoggingConfig()
