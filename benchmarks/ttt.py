"""Test-time adaptation on the shared C. elegans sessions: standard vs FOMAML vs E2E-TTT.

    python benchmarks/ttt.py [--data ../shared/data] [--seeds 0 1 2] [--steps 150]
    python benchmarks/ttt.py --cost-only
    python benchmarks/ttt.py --jobs 3      # the three folds at once, one torch thread each

Leave-2-out with rotation: the six sessions (sorted) form three folds of two held-out
sessions. For every fold, ``compare_ttt_methods`` trains standard, FOMAML and E2E-TTT
models (same data, steps, seeds; separate run directories) and adapts each to the two
held-out sessions with support budgets of 10, 50 and 100 windows from the start of their
training part. Recorded per method and budget, over folds and seeds: the mean adaptation
curve (query score after k steps), zero-shot and adapted scores, the long fine-tuning
score, and steps-to-95% (first step reaching 95% of the gain of long fine-tuning with the
same budget). Also memory (peak resident set of a fresh process) and time per meta-step
for FOMAML vs E2E-TTT (with and without activation checkpointing).
Results: benchmarks/results/ttt.json and ttt.md; the seed's expectation is that
meta-learned adaptation reaches 95% of the fine-tuning gain in at most a third of the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from common import RESULTS, save

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = ["2022-01-16-01", "2022-07-26-31", "2022-07-26-38", "2022-07-27-31", "2022-07-27-38", "2022-08-02-31"]
MODEL = {"kind": "poco", "hidden": 64, "heads": 4, "head_dim": 32, "conditioning_dim": 256, "input_norm": "mean"}


def config(data: Path, held: list[str], seeds: list[int], steps: int, adapt_steps: int,
           threads: int | None = None) -> dict:
    return {
        "base": str(ROOT / "configs" / "_poco_common.yaml"),
        "task": "ttt_compare",
        "name": "bench_ttt",
        "methods": ["standard", "fomaml", "e2e_ttt"],
        "data": {"root": str(data), "datasets": [{"name": "celegans", "path": "celegans_flavell", "resample_dt": 0.6}],
                 "held_out_sessions": [f"celegans/{s}" for s in held]},
        "model": MODEL,
        "training": {"max_steps": steps, "val_every": max(25, steps // 4), "val_windows": 256, "seeds": seeds,
                     "learning_rate": 1e-3, "num_threads": threads,
                     "meta": {"inner_lr": 1.0, "inner_steps": 3, "meta_batch_size": 4, "support_windows": 16,
                              "query_windows": 16, "val_sessions": 4}},
        # every method adapts as the meta inner loop does (SGD at inner_lr): the setting the
        # meta-learned initialisation was trained for, and the same for the standard model
        "eval": {"adaptation": {"steps": adapt_steps, "lr": 1.0, "optimizer": "sgd", "eval_every": 5,
                                "long_steps": 3 * adapt_steps,
                                "budgets": [10, 50, 100], "query_windows": 128}},
        "logging": {"tensorboard": False},
    }


def run_fold(data: Path, held: list[str], seeds: list[int], steps: int, adapt_steps: int, tmp: Path,
             threads: int | None = None) -> dict:
    import yaml

    name = f"fold_{'_'.join(held)}"
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config(data, held, seeds, steps, adapt_steps, threads)))
    out = subprocess.run([sys.executable, "-m", "neurocast", "--quiet", "train", str(path), "--runs-dir",
                          str(tmp / f"runs_{name}")], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-4000:])
    run = Path(out.stdout.strip().splitlines()[-1])
    per_seed = {}
    for method in ("standard", "fomaml", "e2e_ttt"):
        for sd in sorted((run / "methods" / method / "seeds").iterdir()):
            s = json.loads((sd / "summary.json").read_text())
            per_seed[(method, int(sd.name))] = {"adaptation": s["adaptation"], "seconds_per_step": s["seconds_per_step"]}
    return per_seed


COST = """
import resource, sys, time, json, torch, numpy as np
sys.argv = ['x']
from neurocast.config import load_task_config
from neurocast.pipelines.forecast import build_task, load_forecast_data
cfg = load_task_config({cfg!r})
sessions, names, _ = load_forecast_data(cfg.data)
task = build_task(cfg, cfg.model, sessions, names, 0, torch.device('cpu'))
opt = torch.optim.Adam(task.model.parameters(), lr=1e-3)
it = iter(task.batches(0)); times = []
for i in range(6):
    b = next(it); t = time.perf_counter()
    opt.zero_grad(); out = task.losses(b, 0)
    if not out.pop('_grads_ready', False): out['total'].backward()
    opt.step(); times.append(time.perf_counter() - t)
print(json.dumps({{'seconds_per_meta_step': float(np.median(times[1:])),
                  'peak_rss_GB': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""


def cost(data: Path) -> dict:
    out = {}
    for mode, ckpt in (("fomaml", False), ("e2e_ttt", False), ("e2e_ttt", True)):
        cfg = config(data, SESSIONS[4:], [0], 10, 10)
        cfg.pop("base")
        cfg.pop("methods")
        cfg.update(task="forecast", name="cost")
        cfg["data"].update(context=48, horizon=16, block_length=1000)
        cfg["training"]["mode"] = mode
        cfg["training"]["meta"]["activation_checkpointing"] = ckpt
        r = subprocess.run([sys.executable, "-c", COST.format(cfg=cfg)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-3000:])
        label = mode + (" + activation checkpointing" if ckpt else "")
        out[label] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{label:38s} {out[label]['seconds_per_meta_step']:.3f} s / meta-step, peak RSS {out[label]['peak_rss_GB']:.2f} GB",
              flush=True)
    return out


def aggregate(results: dict) -> tuple[dict, str]:
    table = {}
    lines = ["| method | budget | zero-shot score | adapted score | long fine-tune score | steps to 95% (median) | reached |",
             "|---|---|---|---|---|---|---|"]
    for method in ("standard", "fomaml", "e2e_ttt"):
        entries = [v for (m, _, _), v in results.items() if m == method]
        budgets = entries[0]["adaptation"]["budgets"].keys()
        for b in budgets:
            per = [e["adaptation"]["budgets"][b] for e in entries]
            s95 = [p["steps_to_95"] for p in per]
            reached = [x for x in s95 if x is not None]
            row = {
                "zero_shot": float(np.mean([p["zero_shot_score"] for p in per])),
                "adapted": float(np.mean([p["adapted_score"] for p in per])),
                "long": float(np.mean([p["long_finetune_score"] for p in per])),
                "steps_to_95_median": float(np.median(reached)) if reached else None,
                "reached": f"{len(reached)}/{len(s95)}",
                "curve_steps": per[0]["steps"],
                "curve_mean": np.mean([p["mean_score"] for p in per], axis=0).tolist(),
            }
            table.setdefault(method, {})[b] = row
            s95_text = "-" if row["steps_to_95_median"] is None else f"{row['steps_to_95_median']:g}"
            lines.append(f"| {method} | {b} | {row['zero_shot']:.4f} | {row['adapted']:.4f} | {row['long']:.4f} | "
                         f"{s95_text} | {row['reached']} |")
    return table, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--adapt-steps", type=int, default=40)
    ap.add_argument("--cost-only", action="store_true")
    ap.add_argument("--no-cost", action="store_true",
                    help="skip the time/memory measurement (take it with --cost-only on a quiet machine)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="folds trained at once (separate processes), each with cpu_count // jobs torch threads")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "celegans_flavell").is_dir():
        raise SystemExit(f"{data}/celegans_flavell not found (--data)")
    res = {} if args.no_cost else {"cost": cost(data)}
    if not args.cost_only:
        t0 = time.perf_counter()
        results = {}
        threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max(1, args.jobs)) as pool:
            folds = {}
            for k in range(3):
                held = SESSIONS[2 * k : 2 * k + 2]
                print(f"fold {k + 1}/3: held out {held}", flush=True)
                folds[k] = pool.submit(run_fold, data, held, args.seeds, args.steps, args.adapt_steps, Path(tmp), threads)
            for k, fut in folds.items():
                for (m, s), v in fut.result().items():
                    results[(m, s, k)] = v
        table, md = aggregate(results)
        res.update({"folds": [SESSIONS[2 * k : 2 * k + 2] for k in range(3)], "seeds": args.seeds,
                    "steps": args.steps, "adapt_steps": args.adapt_steps, "table": table,
                    "config_example": config(data, SESSIONS[:2], args.seeds, args.steps, args.adapt_steps),
                    "wall_seconds": time.perf_counter() - t0,
                    "invocation": "python benchmarks/ttt.py " + " ".join(sys.argv[1:])})
        std = table["standard"]
        target = {}
        for method in ("fomaml", "e2e_ttt"):
            for b, row in table[method].items():
                ref = std[b]["steps_to_95_median"]
                mine = row["steps_to_95_median"]
                target[f"{method} {b}"] = None if ref is None or mine is None else mine <= ref / 3
        res["third_of_the_steps"] = target
        (RESULTS / "ttt.md").write_text(f"# Test-time adaptation benchmark ({time.strftime('%Y-%m-%d')})\n\n"
                                        f"{res['invocation']}\n\n{md}\n")
        print(md)
    path = save("ttt" if not args.cost_only else "ttt_cost", res)
    print(f"written {path}")


if __name__ == "__main__":
    main()
