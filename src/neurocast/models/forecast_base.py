"""What every multi-session forecasting model sees: a padded batch of windows.

Sessions have different numbers of units (neurons or principal components), so a batch
of windows (from one dataset, several sessions) is padded to the largest unit count in
it and carries a mask. No model loops over windows in Python.

    x          (B, C, D)  context frames (padded units are 0)
    y          (B, P, D)  target frames (only for training / evaluation)
    unit_mask  (B, D)     True for real units
    session    (B,)       global session index (into the model's session table)
    dataset    (B,)       dataset index
    unit_ids   (B, D)     global unit index (into per-unit tables; 0 where padded)

A model is built with a :class:`SessionTable` (units per session, dataset of each
session) so per-session / per-unit parameters can be allocated; ``forward(batch)``
returns predictions (B, P, D).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class ForecastBatch:
    x: torch.Tensor
    y: torch.Tensor | None
    unit_mask: torch.Tensor
    session: torch.Tensor
    dataset: torch.Tensor
    unit_ids: torch.Tensor
    starts: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    def to(self, device) -> "ForecastBatch":
        return ForecastBatch(
            self.x.to(device), None if self.y is None else self.y.to(device), self.unit_mask.to(device),
            self.session.to(device), self.dataset.to(device), self.unit_ids.to(device), self.starts,
        )


@dataclass
class SessionTable:
    """Units per session and dataset of each session; global unit ids follow session order."""

    units: list[int]
    datasets: list[int]
    names: list[str] = field(default_factory=list)
    n_datasets: int = 1

    def __post_init__(self):
        if len(self.units) != len(self.datasets):
            raise ValueError("units and datasets must have one entry per session")
        if not self.names:
            self.names = [f"session{i}" for i in range(len(self.units))]
        self.n_datasets = max(self.n_datasets, (max(self.datasets) + 1) if self.datasets else 1)

    @property
    def n_sessions(self) -> int:
        return len(self.units)

    @property
    def n_units(self) -> int:
        return int(sum(self.units))

    @property
    def max_units(self) -> int:
        return int(max(self.units)) if self.units else 0

    def offsets(self) -> np.ndarray:
        """Global id of unit 0 of every session."""
        return np.concatenate([[0], np.cumsum(self.units)[:-1]]).astype(np.int64)

    def to_dict(self) -> dict:
        return {"units": list(map(int, self.units)), "datasets": list(map(int, self.datasets)),
                "names": list(self.names), "n_datasets": int(self.n_datasets)}

    @classmethod
    def from_dict(cls, d: dict) -> "SessionTable":
        return cls(list(d["units"]), list(d["datasets"]), list(d["names"]), int(d["n_datasets"]))


class ForecastModel(nn.Module):
    """Base class: subclasses implement ``forward(batch) -> (B, P, D)``."""

    def __init__(self, sessions: SessionTable, context: int, horizon: int):
        super().__init__()
        self.sessions = sessions
        self.context = int(context)
        self.horizon = int(horizon)

    def forward(self, batch: ForecastBatch) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def padded_session_weight(n_sessions: int, *shape: int, init: str = "kaiming", fan_in: int | None = None) -> nn.Parameter:
    """A (n_sessions, *shape) parameter for per-session maps padded to the largest session."""
    w = torch.empty(n_sessions, *shape)
    if init == "zeros":
        nn.init.zeros_(w)
    else:
        bound = 1.0 / float(np.sqrt(fan_in or shape[0]))
        nn.init.uniform_(w, -bound, bound)
    return nn.Parameter(w)
