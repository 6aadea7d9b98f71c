"""The base class of multi-session forecasting models.

A model is built with a :class:`~neurocast.data.forecast_batch.SessionTable` (units per
session, dataset of each session) so per-session / per-unit parameters can be allocated;
``forward(batch)`` takes a padded :class:`~neurocast.data.forecast_batch.ForecastBatch`
(context ``x`` (B, C, D), ``unit_mask`` (B, D), session / dataset / unit indices) and
returns predictions (B, P, D).
"""

from __future__ import annotations

import torch
from torch import nn

from neurocast.data.forecast_batch import ForecastBatch, SessionTable


class ForecastModel(nn.Module):
    """Base class: subclasses implement ``forward(batch) -> (B, P, D)``."""

    def __init__(self, sessions: SessionTable, context: int, horizon: int):
        super().__init__()
        self.sessions = sessions
        self.context = int(context)
        self.horizon = int(horizon)

    def forward(self, batch: ForecastBatch) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError
