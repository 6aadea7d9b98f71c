"""Simulators: the fly visual system (connectome-constrained) and multi-session RNNs."""

from __future__ import annotations

from pathlib import Path

from neurocast.errors import ConfigError


def simulate(cfg, output: str | Path | None = None) -> Path:
    """Run (or reuse) the simulation a config describes; returns the dataset folder."""
    from neurocast.schema.rnn_simulation import RNNSimulationConfig
    from neurocast.schema.simulation import FlySimulationConfig

    if isinstance(cfg, FlySimulationConfig):
        from neurocast.sim.fly_simulation import simulate_fly

        return simulate_fly(cfg, output)
    if isinstance(cfg, RNNSimulationConfig):
        from neurocast.sim.rnn_sessions import simulate_rnn

        return simulate_rnn(cfg, output)
    raise ConfigError(f"task {getattr(cfg, 'task', None)!r} is not a simulation")
