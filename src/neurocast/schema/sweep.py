"""Config of a sweep (task: sweep): a base experiment, a grid of overrides, seeds, an executor."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from neurocast.config import Section


class LocalExecutor(Section):
    jobs: int = Field(1, ge=1, description="trials run at once, each in its own process")


class SlurmExecutor(Section):
    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(2, ge=1)
    mem_gb: float = Field(16, gt=0)
    time_min: int = Field(240, ge=1, description="time limit per trial (minutes)")
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = Field(64, ge=1, description="trials running at once")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each trial (module load, venv)")
    extra: dict[str, Any] = Field(default_factory=dict, description="more #SBATCH options (name -> value)")


class LSFExecutor(Section):
    queue: str | None = None
    gpus: int = Field(0, ge=0, description='-gpu "num=N"')
    cpus: int = Field(2, ge=1, description="-n")
    mem_gb: float = Field(16, gt=0, description='-R "rusage[mem=...]" (GB)')
    time_min: int = Field(240, ge=1, description="-W (minutes)")
    parallelism: int = Field(64, ge=1, description="array slots running at once (%N)")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each trial")
    extra: list[str] = Field(default_factory=list, description="more #BSUB lines, e.g. '-P project'")


class SweepConfig(Section):
    """A grid of runs of one experiment (`neurocast sweep SWEEP.yaml`)."""

    task: Literal["sweep"] = "sweep"
    name: str = Field(..., min_length=1, description="sweep name: runs go to <runs_dir>/sweeps/<name>-<hash>/")
    description: str = ""
    experiment: str = Field(..., description="the experiment config (a path or a preset name)")
    overrides: list[str] = Field(default_factory=list, description="overrides applied to every trial")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values (Cartesian product)")
    seeds: int = Field(1, ge=1, description="trials per grid point (seeds 0..n-1)")
    runs_dir: str = "runs"
    executor: Literal["local", "slurm", "lsf"] = "local"
    local: LocalExecutor = LocalExecutor()
    slurm: SlurmExecutor = SlurmExecutor()
    lsf: LSFExecutor = LSFExecutor()

    @field_validator("grid")
    @classmethod
    def _grid(cls, v):
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"grid key {k!r} has no values")
        return v
