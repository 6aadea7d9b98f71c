"""POCO and every baseline on the shared C. elegans sessions, and POCO's step time.

    python benchmarks/poco.py [--data ../shared/data] [--steps 1000] [--seeds 0 1 2]
    python benchmarks/poco.py --timing-only

(a) Score table: POCO, its Perceiver-only ablation and every baseline (univariate MLP,
    NLinear, DLinear, TSMixer, GRU) trained on all six Flavell-lab sessions
    (celegans_flavell, resampled to 0.6 s) with the same splits, steps and seeds; the
    test prediction score of the best-validation checkpoint, mean and 95% interval over
    seeds. The exact command is recorded with the results.
(b) Seconds per training step (forward + backward + AdamW) of POCO for a batch of 64
    windows of 130-neuron sessions, against the anchor's ~6.8 s on the same machine.
Results: benchmarks/results/poco.json and poco.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, save

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "poco": {"kind": "poco"},
    "poco_mean": {"kind": "poco", "input_norm": "mean"},
    "poyo": {"kind": "poco", "conditioning": "none"},
    "mlp": {"kind": "mlp"},
    "nlinear": {"kind": "nlinear"},
    "dlinear": {"kind": "dlinear"},
    "tsmixer": {"kind": "tsmixer"},
    "gru": {"kind": "gru"},
}


def step_time(repeats: int = 10) -> dict:
    from neurocast.models.forecast_base import ForecastBatch, SessionTable
    from neurocast.models.poco import POCO
    from neurocast.schema.forecast import PocoConfig

    torch.manual_seed(0)
    table = SessionTable([130] * 6, [0] * 6)
    model = POCO(table, 48, 16, PocoConfig())
    B, D = 64, 130
    sess = torch.randint(0, 6, (B,))
    uid = torch.as_tensor(table.offsets())[sess][:, None] + torch.arange(D)[None]
    batch = ForecastBatch(torch.randn(B, 48, D), torch.randn(B, 16, D), torch.ones(B, D, dtype=torch.bool), sess,
                          torch.zeros(B, dtype=torch.long), uid)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4, amsgrad=True)
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        loss = ((model(batch) - batch.y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return {"seconds_per_step_median": float(np.median(times)), "seconds_per_step_best": float(min(times)),
            "batch": B, "units": D, "anchor_seconds_per_step": 6.8, "target_seconds": 0.5}


def score_table(data: Path, steps: int, seeds: list[int], models: list[str], val_every: int) -> dict:
    import yaml

    cfg = {
        "base": str(ROOT / "configs" / "_poco_common.yaml"),
        "task": "forecast_compare",
        "name": "bench_poco_celegans",
        "data": {"root": str(data), "datasets": [{"name": "celegans", "path": "celegans_flavell", "resample_dt": 0.6}]},
        "training": {"max_steps": steps, "val_every": val_every, "val_windows": 512, "seeds": seeds},
        "models": {m: MODELS[m] for m in models},
        "logging": {"tensorboard": False},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "neurocast", "--quiet", "train", str(path), "--runs-dir", str(Path(tmp) / "runs")]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        run = Path(out.stdout.strip().splitlines()[-1])
        summary = json.loads((run / "summary.json").read_text())
        table = (run / "comparison.md").read_text()
    rows = {}
    for label, r in summary["models"].items():
        d = r["datasets"]["celegans"]
        rows[label] = {k: d[k] for k in ("score", "mse", "mae")}
    return {"config": cfg, "command": "neurocast train <config above> (written by benchmarks/poco.py)",
            "wall_seconds": time.perf_counter() - t, "models": rows, "table_md": table}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--val-every", type=int, default=25)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--timing-only", action="store_true")
    args = ap.parse_args()
    res = {"timing": step_time()}
    t = res["timing"]
    print(f"POCO step (64 windows x 130 units): {t['seconds_per_step_median']:.3f} s median "
          f"(target <= 0.5 s; the anchor's code ~6.8 s here)", flush=True)
    if not args.timing_only:
        data = Path(args.data)
        if not (data / "celegans_flavell").is_dir():
            raise SystemExit(f"{data}/celegans_flavell not found (--data)")
        res["scores"] = score_table(data, args.steps, args.seeds, args.models, args.val_every)
        res["scores"]["invocation"] = "python benchmarks/poco.py " + shlex.join(sys.argv[1:])
        print(res["scores"]["table_md"])
        best = max(res["scores"]["models"].items(), key=lambda kv: kv[1]["score"]["mean"])
        res["targets"] = {"poco_above_every_baseline": best[0].startswith("poco"),
                          "step_le_0.5s": t["seconds_per_step_median"] <= 0.5}
        (RESULTS / "poco.md").write_text(
            f"# POCO benchmark ({time.strftime('%Y-%m-%d')})\n\n{res['scores']['invocation']}\n\n"
            f"{res['scores']['table_md']}\nPOCO training step, 64 windows x 130 units: "
            f"{t['seconds_per_step_median']:.3f} s (median)\n")
    path = save("poco" if not args.timing_only else "poco_timing", res)
    print(f"written {path}")


if __name__ == "__main__":
    main()
