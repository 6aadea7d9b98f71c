"""`neurocast simulate`: write a simulated dataset (fly visual system or multi-session RNN)."""

from __future__ import annotations

import argparse

from neurocast.cli import emit_path, register, with_overrides


def _simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="simulation config (e.g. configs/sim/fly_small.yaml)")
    p.add_argument("--output", default=None, help="dataset folder (default: <output_root>/<name>-<config hash>)")
    with_overrides(p)


@register("simulate", "simulate a dataset from a config and write it to the on-disk store (an existing one is "
          "verified against its checksums and reused)", _simulate_args)
def _cmd_simulate(args: argparse.Namespace) -> int:
    from neurocast.presets_index import resolve_config_path
    from neurocast.sim import simulate
    from neurocast.tasks import load_task_config

    cfg = load_task_config(resolve_config_path(args.config), args.overrides)
    emit_path(simulate(cfg, args.output, verify="full"))
    return 0
