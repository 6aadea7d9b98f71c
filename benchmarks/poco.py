"""POCO and every baseline on the shared C. elegans sessions, and POCO's step time.

    python benchmarks/poco.py [--data ../shared/data] [--steps 1000] [--seeds 0 1 2]
    python benchmarks/poco.py --models poco nlinear --protocols train whole_recording --threads 1 --no-timing
    python benchmarks/poco.py --timing-only
    python benchmarks/poco.py --render-only      # rewrite results/poco.md from results/poco.json

(a) Score table: POCO, its Perceiver-only ablation and every baseline (univariate MLP,
    NLinear, DLinear, TSMixer, GRU) trained on all six Flavell-lab sessions
    (celegans_flavell, resampled to 0.6 s) with the same splits, steps and seeds; the
    test prediction score of the best-validation checkpoint, mean and 95% interval over
    seeds, under each normalisation protocol asked for (``data.normalization_fit``:
    ``train``, neurocast's default, or ``whole_recording``, the published POCO protocol,
    which leaks). Results accumulate per (protocol, model): a run replaces the rows it
    measured and keeps the others, each row with the exact command that produced it.
(b) Seconds per training step (forward + backward + AdamW) of POCO for a batch of 64
    windows of 130-, 512- and 2048-unit sessions, with the FLOPs of one step counted by
    torch's FlopCounterMode and divided by the fp32 matmul peak measured in the same process
    (same threads) before and after: the fraction of the machine's compute the step uses.
    No figure of another code base is quoted here: none was measured in this run.
Results: benchmarks/results/poco.json and poco.md.
"""

from __future__ import annotations

import argparse
import json
import os
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


VARIANTS = {
    "reference": "the FiLM readout as one expression (POCO.fused_film = False), glibc's default allocator",
    "blocked": "the FiLM readout in row blocks (neurocast.models.film), glibc's default allocator",
    "reference_kept_memory": "reference, freed memory kept for reuse (neurocast.devices.keep_freed_memory)",
    "blocked_kept_memory": "blocked + kept memory: what neurocast's trainers run on CPU",
}


def step_time(units: tuple[int, ...] = (130, 512, 2048)) -> dict:
    """Seconds per POCO training step for every variant in VARIANTS, the two FiLM variants
    alternating step by step; the allocator setting is process-wide and can only be switched on,
    so the default-allocator variants are measured first. FLOPs are counted on the reference."""
    from common import load, matmul_peak, time_step
    from neurocast.data.forecast_batch import ForecastBatch, SessionTable
    from neurocast.devices import keep_freed_memory
    from neurocast.models.poco import POCO
    from neurocast.schema.forecast import PocoConfig

    def make_step(D: int, fused: bool):
        torch.manual_seed(0)
        table = SessionTable([D] * 6, [0] * 6)
        model = POCO(table, 48, 16, PocoConfig())
        model.fused_film = fused
        B = 64
        sess = torch.randint(0, 6, (B,))
        uid = torch.as_tensor(table.offsets())[sess][:, None] + torch.arange(D)[None]
        batch = ForecastBatch(torch.randn(B, 48, D), torch.randn(B, 16, D), torch.ones(B, D, dtype=torch.bool), sess,
                              torch.zeros(B, dtype=torch.long), uid)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4, amsgrad=True)

        def step():
            loss = ((model(batch) - batch.y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()

        return step

    repeats = {130: 10, 512: 6}
    peaks = [matmul_peak()]
    rows = {D: {"batch": 64, "units": D, "variants": {}} for D in units}
    for kept in (False, True):
        if kept and not keep_freed_memory():
            print("the C library is not glibc (or NEUROCAST_CPU_ALLOCATOR=system): no kept-memory variants")
            break
        for D in units:
            steps = {"reference": make_step(D, False), "blocked": make_step(D, True)}
            if not kept:
                rows[D]["flops_per_step"] = time_step(steps["reference"], 0)[0]
            times = {k: [] for k in steps}
            for k in steps:
                steps[k]()
            for _ in range(repeats.get(D, 3)):
                for k, fn in steps.items():
                    times[k].append(time_step(fn, 1, warm=False)[1][0])
            for k, ts in times.items():
                name = k + ("_kept_memory" if kept else "")
                rows[D]["variants"][name] = {"seconds_per_step_median": float(np.median(ts)),
                                             "seconds_per_step_best": float(min(ts)), "repeats": len(ts)}
                print(f"POCO step, 64 windows x {D} units, {name}: {np.median(ts):.3f} s", flush=True)
            peaks.append(matmul_peak())
    peak = max(peaks)  # the best the machine showed around the measurements
    out = []
    for r in rows.values():
        for v in r["variants"].values():
            v["fraction_of_matmul_peak"] = r["flops_per_step"] / v["seconds_per_step_median"] / peak
        head = "blocked_kept_memory" if "blocked_kept_memory" in r["variants"] else "blocked"
        out.append({**r, "headline": head, **{k: r["variants"][head][k] for k in
                                              ("seconds_per_step_median", "seconds_per_step_best",
                                               "fraction_of_matmul_peak")}})
        print(f"  {r['units']} units: {r['flops_per_step'] / 1e9:.1f} GFLOP; " + ", ".join(
            f"{k} {v['fraction_of_matmul_peak']:.0%}" for k, v in r["variants"].items()), flush=True)
    return {"rows": out, "variants": VARIANTS, "matmul_peak_gflops": peak / 1e9,
            "matmul_peaks_gflops": [p / 1e9 for p in peaks], "bound": "fp32 matmul peak (2048^3, same threads)",
            "threads": torch.get_num_threads(), **load(),
            # the 130-unit row, under the keys earlier results used
            "seconds_per_step_median": out[0]["seconds_per_step_median"], "batch": 64, "units": out[0]["units"]}


PROTOCOLS = {
    "train": "train: normalisation fitted on training frames only (neurocast's default)",
    "whole_recording": "whole_recording: fitted on whole recordings, the published POCO protocol (LEAKING)",
}


def score_table(data: Path, steps: int, seeds: list[int], models: list[str], val_every: int, protocol: str,
                threads: int | None) -> dict:
    import yaml

    cfg = {
        "base": str(ROOT / "configs" / "_poco_common.yaml"),
        "task": "forecast_compare",
        "name": f"bench_poco_celegans_{protocol}",
        "data": {"root": str(data), "datasets": [{"name": "celegans", "path": "celegans_flavell", "resample_dt": 0.6}],
                 "normalization_fit": protocol},
        "training": {"max_steps": steps, "val_every": val_every, "val_windows": 512, "seeds": seeds},
        "models": {m: MODELS[m] for m in models},
        "logging": {"tensorboard": False},
    }
    if threads:
        cfg["training"]["num_threads"] = threads
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
    if summary["protocol"]["normalization_fit"] != protocol:
        raise SystemExit(f"the run used normalization_fit={summary['protocol']['normalization_fit']}, not {protocol}")
    rows = {}
    for label, r in summary["models"].items():
        d = r["datasets"]["celegans"]
        rows[label] = {**{k: d[k] for k in ("score", "mse", "mae")}, "seeds": summary["models"][label]["seeds"]}
    return {"config": cfg, "wall_seconds": time.perf_counter() - t, "models": rows}


def load_previous() -> dict:
    """{protocol: {model: row}} from results/poco.json (older single-protocol files count as train)."""
    path = RESULTS / "poco.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if "protocols" in old:
        return old["protocols"]
    sc = old.get("scores")
    if not sc:
        return {}
    when = old.get("machine", {}).get("date", "?")
    cmd = sc.get("invocation", "python benchmarks/poco.py").strip()
    return {"train": {m: {**r, "seeds": sc["config"]["training"]["seeds"], "invocation": cmd, "date": when,
                          "config": sc["config"]} for m, r in sc["models"].items()}}


def _score(r: dict) -> str:
    from neurocast.report.tables import fmt_interval

    return fmt_interval(r["score"], 3)


def render(protocols: dict, timing: dict | None) -> str:
    from neurocast.report.tables import fmt_interval, interval, markdown_table

    lines = [f"# POCO benchmark ({time.strftime('%Y-%m-%d')})", "",
             "All six Flavell-lab C. elegans sessions (celegans_flavell), resampled to 0.6 s, context 48, horizon 16, "
             "the POCO presets' training settings; test prediction score (1 - MSE / MSE(copy-last)) of the "
             "best-validation checkpoint, mean ± 95% interval over seeds. Each row names the command that measured it.",
             ""]
    both = [m for m in MODELS if all(m in protocols.get(p, {}) for p in PROTOCOLS)]
    if both:
        lines += ["## The two normalisation protocols side by side", "",
                  "`whole_recording` z-scores each session over all its frames, as POCO's published scores do: "
                  "statistics of the validation and test frames enter the inputs (LEAKING). Scores are in each "
                  "protocol's own normalised units.", ""]
        rows = []
        for m in both:
            a, b = protocols["train"][m], protocols["whole_recording"][m]
            if a["config"]["training"] != b["config"]["training"] or a["seeds"] != b["seeds"]:
                continue  # measured with different settings: not a pair
            diff = interval([y - x for x, y in zip(a["score"]["values"], b["score"]["values"])])
            rows.append([m, _score(a), _score(b), fmt_interval(diff, 3, signed=True)])
        lines += [markdown_table(["model", "train", "whole_recording (LEAKING)", "difference (paired by seed)"], rows),
                  ""]
    commands: list[str] = []
    for p, title in PROTOCOLS.items():
        if not protocols.get(p):
            continue
        rows = []
        for m in MODELS:
            r = protocols[p].get(m)
            if r is None:
                continue
            cmd = f"{r['invocation']} ({r['date']})"
            if cmd not in commands:
                commands.append(cmd)
            rows.append([m, _score(r), f"{r['mse']['mean']:.4g}", f"{r['mae']['mean']:.4g}", str(len(r["seeds"])),
                         f"[{commands.index(cmd) + 1}]"])
        lines += [f"## {title}", "", markdown_table(["model", "test score", "test MSE", "test MAE", "seeds", "command"],
                                                     rows), ""]
    lines += ["## Commands", ""] + [f"{i + 1}. `{c.rsplit(' (', 1)[0]}` ({c.rsplit(' (', 1)[1]}" for i, c in
                                    enumerate(commands)] + [""]
    if timing:
        when = f"; measured {timing['measured']} with {timing['threads']} torch threads" if "measured" in timing else ""
        if "load_1min" in timing:
            when += f", load average {timing['load_1min']} on {timing['cpu_count']} cores"
        for r in timing.get("rows") or [timing]:
            share = (f", {r['fraction_of_matmul_peak']:.0%} of the fp32 matmul peak measured in the same run "
                     f"({timing['matmul_peak_gflops']:.1f} GFLOP/s)") if "fraction_of_matmul_peak" in r else ""
            lines += [f"POCO training step, 64 windows x {r['units']} units: {r['seconds_per_step_median']:.3f} s "
                      f"(median{when}){share}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--val-every", type=int, default=25)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the training runs")
    ap.add_argument("--timing-only", action="store_true")
    ap.add_argument("--no-timing", action="store_true", help="skip the step-time measurement")
    ap.add_argument("--render-only", action="store_true", help="rewrite results/poco.md from results/poco.json")
    args = ap.parse_args()
    if args.render_only:
        saved = json.loads((RESULTS / "poco.json").read_text())
        (RESULTS / "poco.md").write_text(render(saved["protocols"], previous_timing()))
        return
    res: dict = {}
    if not args.no_timing:
        res["timing"] = step_time()
    if args.timing_only:
        print(f"written {save('poco_timing', res)}")
        if (RESULTS / "poco.json").exists():  # the score page shows the latest step time
            (RESULTS / "poco.md").write_text(render(json.loads((RESULTS / "poco.json").read_text())["protocols"],
                                                    previous_timing()))
        return
    data = Path(args.data)
    if not (data / "celegans_flavell").is_dir():
        raise SystemExit(f"{data}/celegans_flavell not found (--data)")
    protocols = load_previous()
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get("OMP_NUM_THREADS") else ""
    invocation = env + "python benchmarks/poco.py " + shlex.join(sys.argv[1:])
    res["runs"] = []
    for p in args.protocols:
        sc = score_table(data, args.steps, args.seeds, args.models, args.val_every, p, args.threads)
        sc["invocation"] = invocation
        res["runs"].append({"protocol": p, **sc})
        for m, r in sc["models"].items():
            protocols.setdefault(p, {})[m] = {**r, "invocation": invocation, "date": time.strftime("%Y-%m-%d"),
                                              "config": sc["config"]}
        print(f"{p}: " + ", ".join(f"{m} {_score(r)}" for m, r in sc["models"].items()), flush=True)
    res["protocols"] = protocols
    train = protocols.get("train", {})
    if train:
        best = max(train, key=lambda m: train[m]["score"]["mean"])
        res["targets"] = {"poco_above_every_baseline_train_protocol": best.startswith("poco")}
    if "timing" in res:
        res["timing"].update(measured=time.strftime("%Y-%m-%d %H:%M"), threads=torch.get_num_threads())
    else:
        res["timing"] = previous_timing()
    (RESULTS / "poco.md").write_text(render(protocols, res.get("timing")))
    print(f"written {save('poco', res)}")


def previous_timing() -> dict | None:
    """The step time recorded by an earlier run (kept when this run does not measure it): the
    latest ``--timing-only`` result (results/poco_timing.json), else the one in results/poco.json."""
    timing_only = RESULTS / "poco_timing.json"
    if timing_only.exists():
        d = json.loads(timing_only.read_text())
        if d.get("timing"):
            return {**d["timing"], "measured": d.get("machine", {}).get("date", "?")}
    path = RESULTS / "poco.json"
    if not path.exists():
        return None
    prev = json.loads(path.read_text())
    t = prev.get("timing")
    if not t:
        return None
    t = {k: v for k, v in t.items() if k not in ("anchor_seconds_per_step", "target_seconds")}
    t.setdefault("measured", prev.get("machine", {}).get("date", "?"))
    t.setdefault("threads", prev.get("machine", {}).get("torch_threads", "?"))
    return t


if __name__ == "__main__":
    main()
