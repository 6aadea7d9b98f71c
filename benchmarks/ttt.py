"""Test-time adaptation benchmark: standard + fine-tuning vs FOMAML vs E2E-TTT, with baselines.

    python benchmarks/ttt.py                   # everything (~2-3 h of one CPU core)
    python benchmarks/ttt.py --parts rnn       # the simulator only (also: celegans, cost)
    python benchmarks/ttt.py --seeds 0 --quick # a smoke run
    python benchmarks/ttt.py --keep DIR        # keep the runs; the same command again reuses finished
                                               # comparisons and resumes stopped ones
    python benchmarks/ttt.py --keep DIR --parts celegans --folds 2   # one fold, e.g. in a second process

Two settings, each run through the CLI (``neurocast train`` of a ``ttt_compare`` config):

* **rnn**: the built-in multi-session chaotic-RNN simulator, preset ``configs/ttt_rnn.yaml``
  (32 sessions sharing a template connectivity, eta = 0.5; 24 train, the last 8 held out).
* **celegans**: the six shared Flavell-lab C. elegans sessions in three leave-2-out folds
  (four training sessions each), POCO with per-window mean removal.

Per method: standard POCO trained first; FOMAML and E2E-TTT meta-trained from its
checkpoint of the same seed (``meta_from_standard``, learned per-group inner step sizes).
Each model adapts to every held-out session with support budgets of 10, 50 and all
windows from the start of the session's training part (Adam 1e-3 for standard models,
SGD at the learned inner step sizes for meta-trained ones), and is scored on the same
later query windows as the baselines: zero-shot with mean-initialised and with the
method's own embeddings, NLinear (closed form, on the training sessions and on the
support) and POCO trained from scratch on the support. Statistics pool every (seed,
held-out session) pair (and fold): the gain after K steps over zero-shot with its 95%
t-interval, steps-to-95% of the gain at K steps (only where that gain's interval lies
above 0), and the early-stopped score. ``cost``: seconds and peak resident memory per
meta-step (one process each, one thread), FOMAML vs E2E-TTT (+ activation checkpointing).
Results: results/ttt.json and results/ttt.md (with the commands).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from common import RESULTS, save

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = ["2022-01-16-01", "2022-07-26-31", "2022-07-26-38", "2022-07-27-31", "2022-07-27-38", "2022-08-02-31"]
METHODS = ("standard", "fomaml", "e2e_ttt")
BASE = ["nlinear_train", "nlinear_support", "scratch"]


def celegans_config(data: Path, held: list[str], seeds: list[int], quick: bool) -> dict:
    rnn = yaml.safe_load((ROOT / "src" / "neurocast" / "presets" / "ttt_rnn.yaml").read_text())
    cfg = {k: v for k, v in rnn.items() if k not in ("data", "description")}
    cfg.update(base=str(ROOT / "configs" / "_poco_common.yaml"), name="ttt_celegans",
               data={"root": str(data),
                     "datasets": [{"name": "celegans", "path": "celegans_flavell", "resample_dt": 0.6}],
                     "held_out_sessions": [f"celegans/{s}" for s in held]})
    cfg["model"] = {**rnn["model"], "input_norm": "mean"}
    cfg["training"] = {**rnn["training"], "max_steps": 400, "seeds": seeds, "val_every": 50}
    cfg["meta_max_steps"] = 100
    cfg["training"]["meta"] = {**rnn["training"]["meta"], "support_windows": 16, "val_sessions": 4}
    if quick:
        _quick(cfg)
    return cfg


def _quick(cfg: dict) -> None:
    cfg["training"].update(max_steps=20, val_every=10)
    cfg["meta_max_steps"] = 4
    cfg["eval"]["adaptation"].update(steps=5, eval_steps=[1, 2, 3], scratch_steps=5, query_windows=32)


def previous_run(runs: Path, seeds: list[int]) -> Path | None:
    """The newest comparison under ``runs`` (``<name>/<time>_...``) trained with these seeds, so that
    running the benchmark again with the same ``--keep`` folder reuses or resumes it."""
    found = []
    for cfg in runs.glob("*/*/config.yaml"):
        if cfg.parent.is_symlink():
            continue
        saved = yaml.safe_load(cfg.read_text()) or {}
        if [int(s) for s in (saved.get("training") or {}).get("seeds", [])] == [int(s) for s in seeds]:
            found.append(cfg.parent)
    return max(found, key=lambda p: p.name) if found else None


def train(config: Path, runs: Path, overrides: list[str], seeds: list[int] | None = None) -> tuple[Path, str]:
    described = " ".join(["neurocast train", str(config), *overrides])
    old = previous_run(runs, seeds) if seeds is not None and runs.is_dir() else None
    if old is not None and (old / "status").read_text().strip() == "complete":
        print(f"reusing {old}", flush=True)
        return old, described
    if old is not None:
        print(f"resuming {old}", flush=True)
        cmd = [sys.executable, "-m", "neurocast", "--quiet", "train", "--resume", str(old)]
    else:
        cmd = [sys.executable, "-m", "neurocast", "--quiet", "train", str(config), "--runs-dir", str(runs),
               "--training.num-threads", "1", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1]), described


def seed_budgets(run: Path) -> dict[str, dict[str, list[dict]]]:
    """method -> budget -> [per-seed protocol entries] of one ttt_compare run."""
    out: dict[str, dict[str, list[dict]]] = {}
    for method in METHODS:
        for sd in sorted((run / "methods" / method / "seeds").iterdir()):
            s = json.loads((sd / "summary.json").read_text())
            for b, entry in s["adaptation"]["budgets"].items():
                entry["_inner_ratio"] = (s.get("inner_support_ratio") or {}).get("last")
                entry["_seconds_per_step"] = s.get("seconds_per_step")
                out.setdefault(method, {}).setdefault(b, []).append(entry)
    return out


def table(entries: dict[str, dict[str, list[dict]]]) -> dict:
    from neurocast.eval.adaptation_protocol import pool

    out = {}
    for method, budgets in entries.items():
        for b, runs in budgets.items():
            st = pool(runs)
            st.pop("per_session")
            if method != "standard":
                for key in BASE:
                    if not st[key]["n"]:
                        st[key] = out["standard"][b][key]
            ratios = [r["_inner_ratio"] for r in runs if r["_inner_ratio"] is not None]
            st["inner_support_ratio"] = float(np.mean(ratios)) if ratios else None
            st["train_seconds_per_step"] = float(np.mean([r["_seconds_per_step"] for r in runs]))
            out.setdefault(method, {})[b] = st
    return out


def ci(e) -> str:
    from neurocast.report.tables import fmt_interval

    return fmt_interval(e, 3)


def markdown(tab: dict) -> str:
    lines = ["| method | budget | zero-shot (mean init) | zero-shot (own init) | after 3 steps | after K steps | "
             "gain (K) | early-stopped | steps to 95% | NLinear train / support | from scratch | inner support ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for method, budgets in tab.items():
        for b, st in budgets.items():
            s95 = st["steps_to_95"] if st["steps_to_95"] is not None else st["steps_to_95_note"].split(" (")[0]
            ratio = "-" if st["inner_support_ratio"] is None else f"{st['inner_support_ratio']:.3f}"
            k3 = st["steps"].index(3) if 3 in st["steps"] else None
            at3 = None if k3 is None else {"mean": st["mean_curve"][k3], "ci95": st["ci95_curve"][k3]}
            lines.append(f"| {method} | {b} | {ci(st['zero_shot_mean_init'])} | {ci(st['zero_shot_own_init'])} | "
                         f"{ci(at3)} | {ci(st['adapted'])} | {ci(st['gain'])} | {ci(st['early_stopped'])} | {s95} | "
                         f"{ci(st['nlinear_train'])} / {ci(st['nlinear_support'])} | {ci(st['scratch'])} | {ratio} |")
    return "\n".join(lines)


def level_steps(st: dict, level: float) -> int | None:
    """First recorded step whose mean score reaches ``level``."""
    hit = [k for k, v in zip(st["steps"], st["mean_curve"]) if v >= level]
    return hit[0] if hit else None


def targets_sim(tab: dict) -> dict:
    out = {}
    for method, budgets in tab.items():
        for b, st in budgets.items():
            out[f"gain interval excludes 0: {method}, {b}"] = bool(st["gain"]["mean"] - st["gain"]["ci95"] > 0)
    for method in ("fomaml", "e2e_ttt"):
        for b, st in tab.get(method, {}).items():
            std = tab["standard"][b]
            ref = std["steps_to_95"]
            mine = st["steps_to_95"]
            out[f"95% of its own gain in <= 1/3 of the standard model's steps: {method}, {b}"] = (
                None if ref is None or mine is None else bool(mine <= ref / 3))
            # the same level: 95% of the standard model's fine-tuning gain on top of its zero-shot score
            if ref is None:
                out[f"standard's 95% level in <= 1/3 of its steps: {method}, {b}"] = None
                continue
            level = std["zero_shot"]["mean"] + 0.95 * std["reference_gain"]["mean"]
            k = level_steps(st, level)
            out[f"standard's 95% level in <= 1/3 of its steps: {method}, {b}"] = (
                f"False (never reached {level:.3f})" if k is None else f"{k <= ref / 3} ({k} vs {ref} steps)")
    return out


def targets_celegans(tab: dict) -> dict:
    out = {}
    for method, budgets in tab.items():
        for b, st in budgets.items():
            if b.startswith("10 "):
                continue
            adapted = st["adapted"]["mean"]
            for key in BASE:
                other = st[key]["mean"]
                out[f"{method} adapted above {key}, {b}"] = None if other is None else bool(adapted > other)
    return out


COST = """
import resource, sys, time, json, torch, numpy as np
torch.set_num_threads(1)
from neurocast.tasks import load_task_config
from neurocast.pipelines.forecast import build_task, load_forecast_data
cfg = load_task_config({path!r}, {overrides!r})
sessions, names, _ = load_forecast_data(cfg.data)
task = build_task(cfg, cfg.model, sessions, names, 0, torch.device('cpu'))
opt = torch.optim.Adam(task.model.parameters(), lr=1e-3)
it = iter(task.batches(0)); times = []
for i in range(8):
    b = next(it); t = time.perf_counter()
    opt.zero_grad(); out = task.losses(b, 0)
    if not out.pop('_grads_ready', False): out['total'].backward()
    opt.step(); times.append(time.perf_counter() - t)
print(json.dumps({{'seconds_per_meta_step': float(np.median(times[2:])),
                  'peak_rss_GB': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""


def cost(config: Path, tmp: Path) -> dict:
    from neurocast.config import read_yaml

    text = read_yaml(config)  # base: resolved
    for k in ("methods", "meta_from_standard", "meta_max_steps"):
        text.pop(k, None)
    text["task"] = "forecast"
    path = tmp / "cost.yaml"
    path.write_text(yaml.safe_dump(text))
    out = {}
    for mode, ckpt in (("standard", False), ("fomaml", False), ("e2e_ttt", False), ("e2e_ttt", True)):
        ov = ["--training.mode", mode, "--training.meta.activation-checkpointing", str(ckpt).lower()]
        r = subprocess.run([sys.executable, "-c", COST.format(path=str(path), overrides=ov)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-3000:])
        label = mode + (" + activation checkpointing" if ckpt else "")
        out[label] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{label:38s} {out[label]['seconds_per_meta_step']:.3f} s / step, peak RSS "
              f"{out[label]['peak_rss_GB']:.2f} GB", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parts", nargs="+", default=["rnn", "celegans", "cost"], choices=["rnn", "celegans", "cost"])
    ap.add_argument("--quick", action="store_true", help="a few steps only (checks that it runs)")
    ap.add_argument("--keep", default=None, help="keep the run directories in this folder; running again with the "
                    "same folder reuses finished comparisons and resumes stopped ones")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2],
                    help="C. elegans leave-2-out folds to run (several processes can run different folds into "
                    "the same --keep folder; the results are recorded only when all three are in one run)")
    args = ap.parse_args()
    data = Path(args.data)
    previous = json.loads((RESULTS / "ttt.json").read_text()) if (RESULTS / "ttt.json").exists() else {}
    res = {k: v for k, v in previous.items() if k in ("rnn", "celegans", "cost")}
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench_ttt_"))
    tmp.mkdir(parents=True, exist_ok=True)
    seeds = [str(s) for s in args.seeds]
    rnn_cfg = ROOT / "configs" / "ttt_rnn.yaml"
    if "rnn" in args.parts:
        t0 = time.perf_counter()
        cfg_path = rnn_cfg
        if args.quick:
            cfg = yaml.safe_load(rnn_cfg.read_text())
            cfg["base"] = str(ROOT / "configs" / "_poco_common.yaml")
            cfg["data"]["datasets"][0]["simulation"] = str(ROOT / "configs" / "sim" / "rnn_sessions.yaml")
            _quick(cfg)
            cfg_path = tmp / "ttt_rnn_quick.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
        run, command = train(cfg_path, tmp / "rnn", ["--training.seeds", *seeds], args.seeds)
        tab = table(seed_budgets(run))
        res["rnn"] = {"command": command, "run": str(run), "table": tab, "targets": targets_sim(tab),
                      "seeds": args.seeds, "wall_seconds": time.perf_counter() - t0}
        print(markdown(tab), flush=True)
    if "celegans" in args.parts:
        if not (data / "celegans_flavell").is_dir():
            raise SystemExit(f"{data}/celegans_flavell not found (--data)")
        t0 = time.perf_counter()
        entries: dict[str, dict[str, list[dict]]] = {}
        commands = []
        for k in args.folds:
            held = SESSIONS[2 * k : 2 * k + 2]
            print(f"fold {k + 1}/3: held out {held}", flush=True)
            path = tmp / f"celegans_fold{k}.yaml"
            path.write_text(yaml.safe_dump(celegans_config(data, held, args.seeds, args.quick)))
            run, command = train(path, tmp / f"celegans{k}", [], args.seeds)
            commands.append(command)
            for m, budgets in seed_budgets(run).items():
                for b, runs in budgets.items():
                    entries.setdefault(m, {}).setdefault(b, []).extend(runs)
        tab = table(entries)
        res["celegans"] = {"commands": commands,
                           "config_fold0": celegans_config(data, SESSIONS[:2], args.seeds, args.quick),
                           "folds": [SESSIONS[2 * k : 2 * k + 2] for k in args.folds], "table": tab,
                           "targets": targets_celegans(tab), "seeds": args.seeds,
                           "wall_seconds": time.perf_counter() - t0}
        print(markdown(tab), flush=True)
    if "cost" in args.parts:
        res["cost"] = {"config": str(rnn_cfg), "per_step": cost(rnn_cfg, tmp)}
    res["invocation"] = "python benchmarks/ttt.py " + " ".join(sys.argv[1:])
    res["quick"] = args.quick
    if "celegans" in args.parts and sorted(args.folds) != [0, 1, 2]:  # part of the C. elegans folds: not a result
        out = tmp / f"ttt_folds_{'_'.join(map(str, args.folds))}.json"
        out.write_text(json.dumps(res, indent=2, default=str))
        print(f"written {out} (results/ttt.json needs all three folds)")
        return
    if args.quick:  # a smoke run never replaces the recorded results
        (tmp / "ttt_quick.json").write_text(json.dumps(res, indent=2, default=str))
        print(f"written {tmp / 'ttt_quick.json'}")
        return
    path = save("ttt", res)
    md = [f"# Test-time adaptation benchmark ({time.strftime('%Y-%m-%d')})", "", f"`{res['invocation']}`", ""]
    for part, title in (("rnn", "Simulator (configs/ttt_rnn.yaml)"), ("celegans", "C. elegans, leave-2-out (3 folds)")):
        if part in res:
            cmds = res[part].get("commands") or [res[part]["command"]]
            md += [f"## {title}", "", *[f"    {c}" for c in cmds], "", markdown(res[part]["table"]), "",
                   "Targets: " + "; ".join(f"{k}: {v}" for k, v in res[part]["targets"].items()), ""]
    if "cost" in res:
        md += ["## Cost per training step (one thread, peak RSS of the process)", ""]
        md += [f"- {k}: {v['seconds_per_meta_step']:.3f} s, {v['peak_rss_GB']:.2f} GB"
               for k, v in res["cost"]["per_step"].items()]
    (RESULTS / "ttt.md").write_text("\n".join(md) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
