"""The batch types of multi-session forecasting: a padded batch of windows and the session table.

Sessions have different numbers of units (neurons or principal components), so a batch
of windows (from one dataset, several sessions) is padded to the largest unit count in
it and carries a mask. No model loops over windows in Python.

    x          (B, C, D)  context frames (padded units are 0)
    y          (B, P, D)  target frames (only for training / evaluation)
    unit_mask  (B, D)     True for real units
    session    (B,)       global session index (into the model's session table)
    dataset    (B,)       dataset index
    unit_ids   (B, D)     global unit index (into per-unit tables; 0 where padded)
    starts     (B,)       start frame of each window in its session (None when unknown)

A :class:`SessionTable` (units per session, dataset of each session) tells a model how many
per-session / per-unit parameters to allocate. Both types are plain data: the data layer
builds them (:func:`neurocast.data.forecast_data.make_batch`), models read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


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
