"""`neurocast demo`: the main job on built-in data (simulate, train, analyse, report)."""

from __future__ import annotations

import argparse

from neurocast.cli import emit_path, register, with_overrides


def _demo_args(p: argparse.ArgumentParser) -> None:
    with_overrides(p)
    p.epilog = (p.epilog or "") + " Overrides apply to the demo's experiment (configs/latent_20step.yaml)."


@register("demo", "simulate the small fly visual system, train the tu=20 model, analyse it, write report.md",
          _demo_args)
def _cmd_demo(args: argparse.Namespace) -> int:
    import signal

    from neurocast.pipelines.demo import run_demo
    from neurocast.train.loop import stop_signal

    emit_path(run_demo(args.overrides))
    return 128 + int(stop_signal() or signal.SIGTERM) if stop_signal() is not None else 0
