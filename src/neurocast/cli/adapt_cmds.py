"""`neurocast adapt`: adapt a trained forecaster to new recordings in a few gradient steps."""

from __future__ import annotations

import argparse

from neurocast.cli import emit_path, register


def _adapt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a forecasting run (or one of its seeds/<s> directories)")
    p.add_argument("--data", required=True, help="file or folder of the new session(s)")
    p.add_argument("--steps", type=int, default=None, help="adaptation steps (default: eval.adaptation.steps)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: eval.adaptation.lr)")
    p.add_argument("--budget", type=int, default=None, help="support windows from the start of the training part")
    p.add_argument("--seconds", type=float, default=None, help="support budget in seconds of recording")
    p.add_argument("--dataset", default=None, help="which of the run's datasets the data belongs to (default: first)")
    p.add_argument("--seed", type=int, default=None, help="which seed's model (default: the first)")
    p.add_argument("--params", choices=["embeddings", "all"], default=None, help="what to adapt")
    p.add_argument("--init", choices=["auto", "learned", "mean", "random"], default=None, help="new embeddings' start")
    p.add_argument("--dt", type=float, default=None, help="frame interval for files that do not store it")
    p.add_argument("--eval-every", type=int, default=1, help="score the query data every N steps (default: every step)")


@register("adapt", "adapt a trained forecaster to new recordings; prints the adaptation directory", _adapt_args)
def _cmd_adapt(args: argparse.Namespace) -> int:
    from neurocast.errors import ConfigError
    from neurocast.pipelines.adapt import adapt_run

    if args.eval_every < 1:
        raise ConfigError(f"--eval-every must be >= 1, got {args.eval_every}")
    for name in ("steps", "budget"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "steps" else 1):
            raise ConfigError(f"--{name} must be >= {0 if name == 'steps' else 1}, got {v}")
    if args.lr is not None and args.lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {args.lr}")
    emit_path(adapt_run(args.run_dir, args.data, steps=args.steps, lr=args.lr, budget=args.budget,
                        seconds=args.seconds, dataset=args.dataset, seed=args.seed, params=args.params,
                        init=args.init, dt=args.dt, eval_every=args.eval_every))
    return 0
