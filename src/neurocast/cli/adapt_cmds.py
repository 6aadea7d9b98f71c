"""`neurocast adapt`: adapt a trained forecaster to new recordings in a few gradient steps."""

from __future__ import annotations

import argparse

from neurocast.cli import emit_path, register


def _adapt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir",
                   help="a forecasting run (forecast, forecast_compare, ttt_compare) or a seeds/<s> directory")
    p.add_argument("--data", required=True, help="file or folder of the new session(s)")
    p.add_argument("--steps", type=int, default=None, help="adaptation steps (default: eval.adaptation.steps)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=None,
                   help="default: the meta inner loop's optimizer for meta-trained models, Adam for standard ones")
    p.add_argument("--lr", type=float, default=None,
                   help="step size (default: the meta inner loop's for meta-trained models, 1e-3 for Adam)")
    p.add_argument("--budget", type=int, default=None, help="support windows from the start of the training part")
    p.add_argument("--seconds", type=float, default=None, help="support budget in seconds of recording")
    p.add_argument("--dataset", default=None, help="which of the run's datasets the data belongs to (default: first)")
    p.add_argument("--seed", type=int, default=None, help="which seed's model (default: the first)")
    p.add_argument("--params", nargs="+", default=None, metavar="GROUP",
                   choices=["embeddings", "units", "session", "film", "output", "backbone", "all"],
                   help="parameter groups to adapt (default: embeddings); e.g. --params embeddings film")
    p.add_argument("--normalization", choices=["session", "support"], default=None,
                   help="session (default): the session's statistics from its whole training part; support: the "
                   "support frames' only")
    p.add_argument("--holdout", type=float, default=None,
                   help="fraction of the support windows held back for early stopping (default 0.2; 0: off)")
    p.add_argument("--model", default=None,
                   help="model label (forecast_compare run) or method (ttt_compare run); default: the first")
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
    if args.holdout is not None and not 0 <= args.holdout < 1:
        raise ConfigError(f"--holdout must be in [0, 1), got {args.holdout}")
    emit_path(adapt_run(args.run_dir, args.data, steps=args.steps, lr=args.lr, budget=args.budget,
                        seconds=args.seconds, dataset=args.dataset, seed=args.seed, params=args.params,
                        init=args.init, dt=args.dt, eval_every=args.eval_every, optimizer=args.optimizer,
                        normalization=args.normalization, holdout=args.holdout, model_label=args.model))
    return 0
