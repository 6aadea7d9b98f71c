"""GPU correctness check, for a user with a CUDA machine: `make gpu-check`.

    python benchmarks/gpu_check.py [--out DIR] [--device cuda] [--gpus N]

Simulates a tiny fly dataset and a tiny set of RNN sessions, then trains the same small
configurations several ways through the CLI and compares their logged losses with a
reference run (same seed, same data, same global batch):

  check                         compared with           tolerance (relative)
  single GPU, fp32              the CPU run             1e-3 (different kernels, same maths)
  2 GPUs under torchrun (DDP)   the single-GPU run      1e-4 (averaged gradients = one big batch)
  TF32 matrix multiplies        the single-GPU run      2e-2 (10-bit mantissa inputs)
  torch.compile                 the single-GPU run      1e-3
  meta-training in bf16 (E2E)   the fp32 meta run       5e-2 (and finite)

Each line prints PASS or FAIL with both numbers; the exit status is 1 when any check fails,
2 when there is no such device. A check that cannot run (one GPU only: no torchrun check)
prints SKIP with the reason. ``--device cpu`` runs the same comparisons on the CPU (the GPU
ones against themselves), which checks this script itself; the test suite does that.
Expected output on a healthy 2-GPU machine: 5 PASS lines and "all checks passed".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

FLY = {
    "task": "fly_simulation", "name": "gpu_check_fly", "network": {"extent": 1},
    "dynamics": {"dt": 0.02, "noise_std": 0.01, "warmup_s": 0.5}, "batch": 4,
    "recordings": {"train": {"duration_s": 50.0, "sequences": 4, "seed": 1,
                             "stimulus": {"families": {"natural": 1.0}, "segment_s": [1.0, 3.0], "seed": 1}}},
}
RNN = {"task": "rnn_simulation", "name": "gpu_check_rnn", "n_units": 60, "n_sessions": 5, "observed_units": 24,
       "connectivity_noise": 0.3, "duration_s": 60.0, "downsample": 5, "seed": 1}


def latent_config(data: Path) -> dict:
    return {
        "task": "latent", "name": "gpu_check_latent",
        "data": {"path": str(data), "cross_validation": [],
                 "split": {"train_start": 0, "train_end": 4000, "validation_start": 4000, "validation_end": 5000}},
        "model": {"latent_dims": 32, "encoder": {"num_hidden_units": 64}, "decoder": {"num_hidden_units": 64},
                  "evolver": {"num_hidden_units": 64},
                  "stimulus_encoder": {"num_hidden_units": 16, "num_output_dims": 8}},
        "training": {"time_units": 5, "evolve_multiple_steps": 2, "epochs": 2, "batch_size": 64,
                     "learning_rate": 2e-3, "validation_windows": 32, "seed": 3},
        "logging": {"tensorboard": False},
    }


def meta_config(data: Path) -> dict:
    return {
        "task": "forecast", "name": "gpu_check_meta",
        "data": {"datasets": [{"name": "rnn", "path": str(data)}], "context": 16, "horizon": 4, "block_length": 600},
        "model": {"kind": "poco", "token_length": 4, "hidden": 32, "heads": 2, "head_dim": 16, "conditioning_dim": 64},
        "training": {"mode": "e2e_ttt", "max_steps": 10, "val_every": 10, "batch_size": 16, "val_windows": 16,
                     "meta": {"support_windows": 8, "query_windows": 8, "meta_batch_size": 2, "inner_steps": 2}},
        "logging": {"tensorboard": False},
    }


def neurocast(args: list, env: dict, torchrun: int = 0) -> str:
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun)] \
        if torchrun else [sys.executable]
    cmd = [*head, "-m", "neurocast", "--quiet", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return [ln for ln in out.stdout.splitlines() if ln.strip()][-1]


CHECKS = ("single", "torchrun", "tf32", "compile", "bf16")


def seed_run(run: Path) -> Path:
    return run / "seeds" / "0" if (run / "seeds").is_dir() else run


def losses(run: Path, key: str) -> list[float]:
    rows = [json.loads(ln) for ln in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    found = [r[key] for r in rows if key in r]
    if not found:
        raise RuntimeError(f"{run}/metrics.jsonl has no {key!r}")
    return found


def compare(name: str, got: list[float], ref: list[float], tol: float) -> bool:
    import math

    rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(got, ref))
    ok = len(got) == len(ref) and all(math.isfinite(a) for a in got) and rel <= tol
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {got[-1]:.6g} vs {ref[-1]:.6g} (max relative difference "
          f"{rel:.2e}, tolerance {tol:g})", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder, removed)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (checks this script)")
    ap.add_argument("--gpus", type=int, default=None,
                    help="processes for the torchrun check (default: all GPUs, max 2)")
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"a subset of {','.join(CHECKS)}")
    ap.add_argument("--fly", default=None, help="an existing fly dataset folder (default: simulate a tiny one)")
    ap.add_argument("--rnn", default=None, help="an existing RNN sessions folder (default: simulate a tiny one)")
    args = ap.parse_args()
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        ap.error(f"--checks: unknown {', '.join(unknown)} (choose from {', '.join(CHECKS)})")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU (torch sees none)", file=sys.stderr)
        return 2
    gpus = args.gpus if args.gpus is not None else (min(torch.cuda.device_count(), 2) if args.device == "cuda" else 2)
    tmp = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NEUROCAST_QUIET": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    results = []
    try:
        data = {}
        for name, sim, given in (("fly", FLY, args.fly), ("rnn", RNN, args.rnn)):
            data[name] = Path(given) if given else tmp / "data" / name
            if not given and not data[name].exists():
                (tmp / f"{name}.yaml").write_text(yaml.safe_dump(sim))
                neurocast(["simulate", tmp / f"{name}.yaml", "--output", data[name]], env)
        lat = tmp / "latent.yaml"
        lat.write_text(yaml.safe_dump(latent_config(data["fly"])))

        def train(cfg: Path, label: str, *extra, torchrun: int = 0) -> Path:
            return Path(neurocast(["train", cfg, "--runs-dir", tmp / "runs" / label, *extra], env, torchrun))

        key = "train/total"
        if set(checks) & {"single", "torchrun", "tf32", "compile"}:
            dev = train(lat, "device", "--training.device", args.device)
        if "single" in checks:
            cpu = train(lat, "cpu", "--training.device", "cpu")
            results.append(compare(f"single {args.device}, fp32 vs CPU", losses(dev, key), losses(cpu, key), 1e-3))
        if "torchrun" in checks and gpus >= 2:
            multi = train(lat, "ddp", "--training.device", args.device, torchrun=gpus)
            results.append(compare(f"{gpus} processes under torchrun vs one", losses(multi, key), losses(dev, key),
                                   1e-4))
        elif "torchrun" in checks:
            print("SKIP  torchrun: fewer than 2 GPUs", flush=True)
        if "tf32" in checks:
            tf32 = train(lat, "tf32", "--training.device", args.device, "--training.use-tf32-matmul", "true")
            results.append(compare("TF32 matrix multiplies vs fp32", losses(tf32, key), losses(dev, key), 2e-2))
        if "compile" in checks:
            comp = train(lat, "compile", "--training.device", args.device, "--training.compile", "true")
            results.append(compare("torch.compile vs eager", losses(comp, key), losses(dev, key), 1e-3))
        if "bf16" in checks:
            meta = tmp / "meta.yaml"
            meta.write_text(yaml.safe_dump(meta_config(data["rnn"])))
            m32 = train(meta, "meta32", "--training.device", args.device)
            m16 = train(meta, "meta16", "--training.device", args.device, "--training.meta.bf16", "true")
            results.append(compare("E2E-TTT meta-training in bf16 vs fp32", losses(seed_run(m16), key),
                                   losses(seed_run(m32), key), 5e-2))
    finally:
        if not args.out:
            shutil.rmtree(tmp, ignore_errors=True)
    if all(results):
        print("all checks passed")
        return 0
    print(f"{results.count(False)} check(s) failed")
    return 1


if __name__ == "__main__":
    sys.exit(main())
