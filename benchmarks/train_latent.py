"""Latent-model training throughput and model-FLOP utilisation (MFU).

    python benchmarks/train_latent.py [--steps 5]

For the tu=20, ems=5 recipe (configs/latent_20step.yaml) at two sizes:

* demo size: the preset as is (extent 2: 1,203 cells, 19 columns, latent 64, width 128);
* extent 8: 13,741 cells, 217 columns, the anchor's full model (latent 256, width 256,
  stimulus encoder 3 x 64 -> 64), batch 256.

One optimiser step = forward + backward of the unrolled objective (100 evolver steps, 5
decoded loss multiples, reconstruction) + Adam update, on random data of the right shapes
(the data pipeline is not timed). FLOPs are counted with torch's FlopCounterMode on one
step; MFU = counted FLOPs per second / the fp32 matrix-multiply peak measured in the
same run (best of several 2048^3 products), with freed memory kept for reuse as the trainer
runs on CPU (and, for comparison, first with glibc's default allocator). Target: MFU >= 40% at
extent 8, batch 256.
Results go to benchmarks/results/train_latent.json.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from common import matmul_peak, save, time_step
from neurocast.data.latent_windows import Batch
from neurocast.devices import keep_freed_memory
from neurocast.models.latent import LatentModel
from neurocast.presets_index import resolve_config_path
from neurocast.tasks import load_task_config
from neurocast.train.latent_objective import unroll_losses

FULL = [
    "--model.latent-dims", "256",
    "--model.encoder.num-hidden-units", "256", "--model.decoder.num-hidden-units", "256",
    "--model.evolver.num-hidden-units", "256",
    "--model.stimulus-encoder.num-hidden-units", "64", "--model.stimulus-encoder.num-hidden-layers", "3",
    "--model.stimulus-encoder.num-output-dims", "64",
    "--training.batch-size", "256",
]


def bench(name: str, n_neurons: int, stim_dims: int, overrides: list[str], steps: int) -> dict:
    cfg = load_task_config(resolve_config_path("configs/latent_20step.yaml"), overrides)
    tr = cfg.training
    tu, ems, bs = tr.time_units, tr.evolve_multiple_steps, tr.batch_size
    torch.manual_seed(0)
    model = LatentModel(n_neurons, stim_dims, cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=tr.learning_rate)
    steps_list = tr.loss_multiples
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(bs, n_neurons, generator=g)
    batch = Batch(x0, torch.randn(bs, tr.window, stim_dims, generator=g), steps_list,
                  torch.randn(bs, ems, n_neurons, generator=g), None, x0, None, np.zeros(bs))

    def step():
        losses = unroll_losses(model, batch, "mse", tr.window, tu, False)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()

    flops, times = time_step(step, steps)
    best = min(times)
    med = float(np.median(times))
    return {
        "name": name,
        "neurons": n_neurons,
        "stimulus_dims": stim_dims,
        "batch": bs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_step": flops,
        "seconds_per_step_best": best,
        "seconds_per_step_median": med,
        "samples_per_s": bs / med,
        "flops_per_s": flops / med,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    sizes = (("demo size (extent 2)", 1203, 19, []), ("extent 8, full model", 13741, 217, FULL))
    peak = matmul_peak()
    # first with glibc's default allocator, then keeping freed memory as the trainer does on CPU
    # (neurocast.devices.keep_freed_memory: process-wide and one-way, hence this order)
    default = []
    for name, n, s, over in sizes:
        default.append(bench(name, n, s, over, args.steps))
        peak = max(peak, matmul_peak())  # measured around each run: the best the machine showed
    kept = keep_freed_memory()
    rows = []
    for (name, n, s, over), d in zip(sizes, default):
        r = bench(name, n, s, over, args.steps) if kept else d
        peak = max(peak, matmul_peak())
        r["kept_freed_memory"] = kept
        r["default_allocator"] = {k: d[k] for k in ("seconds_per_step_median", "samples_per_s", "flops_per_s")}
        rows.append(r)
    for r in rows:
        r["mfu"] = r["flops_per_s"] / peak
        r["default_allocator"]["mfu"] = r["default_allocator"]["flops_per_s"] / peak
        print(
            f"{r['name']:24s} N={r['neurons']:6d} batch {r['batch']:3d} params {r['parameters'] / 1e6:6.2f} M  "
            f"{r['flops_per_step'] / 1e9:7.1f} GFLOP/step  {r['seconds_per_step_median']:6.3f} s/step  "
            f"{r['samples_per_s']:7.1f} samples/s  {r['flops_per_s'] / 1e9:6.1f} GFLOP/s  MFU {r['mfu']:.0%} "
            f"(default allocator {r['default_allocator']['mfu']:.0%})"
        )
    e8 = rows[-1]
    targets = {"extent8_mfu_ge_40pct": e8["mfu"] >= 0.40}
    path = save("train_latent", {"matmul_peak_gflops": peak / 1e9, "rows": rows, "targets": targets})
    print(f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; targets {targets}; written {path}")


if __name__ == "__main__":
    main()
