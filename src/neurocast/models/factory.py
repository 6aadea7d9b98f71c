"""Build a forecasting model from its config section."""

from __future__ import annotations

from neurocast.data.forecast_batch import SessionTable
from neurocast.models.forecast_base import ForecastModel


def build_forecaster(cfg, sessions: SessionTable, context: int, horizon: int) -> ForecastModel:
    if cfg.kind == "poco":
        from neurocast.models.poco import POCO

        return POCO(sessions, context, horizon, cfg)
    from neurocast.models.baselines import build_baseline

    return build_baseline(cfg, sessions, context, horizon)
