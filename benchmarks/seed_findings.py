"""The LatentEvolution seed's findings, reproduced at CPU scale on the trained fly network.

    python benchmarks/seed_findings.py [--seeds 0,1] [--jobs 2] [--runs DIR] [--only tu5,tu5_ils3]

For every preset in ``configs/seed/`` and every seed: ``neurocast train configs/seed/<name>.yaml
--training.seed S --run-dir DIR/<name>/seed<S>`` then ``neurocast analyze RUN --epoch final``
(2000-step latent roll-outs from 10 starts on validation and both cross-validation sets, with
the linear baselines). Finished runs are reused, killed ones resumed, so the script can be run
again. Each of the seed's qualitative claims (``../shared/reference/latent_evolution.md``
sections 6-7) is then checked by an explicit rule on the measured numbers (mean over seeds) and
marked reproduced / not reproduced / partly. Writes results/seed_findings.json and .md.

Metrics, all on the latent roll-out of the validation range unless a claim names the
cross-validation sets: per-neuron MSE in each neuron's own training-variance units, averaged
over neurons without R1-R8 ("pn"), inside the training window, between its observation points
and beyond it; the stable horizon (first step whose global normalised MSE exceeds 1, i.e. the
data variance); and the best observation-constrained linear baseline (stimulus-only ridge or
PCA linear dynamics) on the same starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "src" / "neurocast" / "presets" / "seed"
SETS = ("val", "cv/natural_noiseless", "cv/artificial")


def neurocast(*args: str) -> list[str]:
    return [sys.executable, "-m", "neurocast", "--quiet", *args]


def run_one(name: str, seed: int, runs: Path) -> tuple[Path, str | None]:
    """Train (or resume, or reuse) and analyse one preset with one seed; returns the run directory
    and, for a run that failed (e.g. diverged), the error line neurocast printed."""
    run = runs / name / f"seed{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    log = runs / name / f"seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    status = (run / "status").read_text().strip() if (run / "status").exists() else None
    failed = runs / name / f"seed{seed}.failed"
    if failed.exists():  # a deterministic failure (same config and seed): not retried
        return run, failed.read_text().strip()
    try:
        _train_and_analyse(name, seed, runs, run, log, status, env)
    except subprocess.CalledProcessError:
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("error:")]
        msg = lines[-1] if lines else f"exit status != 0 (see {log})"
        failed.write_text(msg + "\n")
        return run, msg
    return run, None


def _train_and_analyse(name, seed, runs, run, log, status, env) -> None:
    with open(log, "a") as out:
        if status != "complete":
            if (run / "checkpoints" / "latest.pt").exists():
                cmd = neurocast("train", "--resume", str(run))
            else:
                if run.exists():  # died before its first checkpoint: start again
                    import shutil

                    shutil.rmtree(run)
                cmd = neurocast("train", str(PRESETS / f"{name}.yaml"), "--training.seed", str(seed),
                                "--training.num-threads", "1", "--run-dir", str(run))
            t0 = time.time()
            subprocess.run(cmd, check=True, stdout=out, stderr=out, env=env, cwd=ROOT)
            (run / "train_seconds").write_text(f"{time.time() - t0:.1f}\n")
        if not (run / "analysis" / "final" / "metrics.json").exists():
            subprocess.run(neurocast("analyze", str(run), "--epoch", "final"), check=True, stdout=out, stderr=out,
                           env=env, cwd=ROOT)


def extract(run: Path) -> dict:
    m = json.loads((run / "analysis" / "final" / "metrics.json").read_text())
    out = {}
    for s in SETS:
        lat = m["rollouts"].get(s, {}).get("latent")
        if not lat:
            continue
        pn = lat["per_neuron_without_inputs"]
        best = lat["best_linear"]["per_neuron_without_inputs"]
        out[s] = {
            "stable_horizon": lat["stable_horizon"],
            "horizon": lat["horizon"],
            "pn_in": pn["within_training_window"],
            "pn_obs": pn["at_observation_points"],
            "pn_between": pn["between_observation_points"],
            "pn_beyond": pn["beyond_training_window"],
            "linear_in": best["within_training_window"]["baseline_value"],
            "linear_beyond": best["beyond_training_window"]["baseline_value"],
            "linear_in_name": best["within_training_window"]["baseline"],
            "interp_between": (lat["baselines"].get("interpolation") or {}).get("per_neuron_without_inputs", {}).get(
                "between_observation_points"),
            "global_obs": lat["mse_at_observation_points"],
            "global_between": lat["mse_between_observation_points"],
        }
    secs = run / "train_seconds"
    out["train_seconds"] = float(secs.read_text()) if secs.exists() else None
    return out


def mean_over(results: dict, name: str, s: str, key: str) -> float | None:
    vals = [r[s][key] for r in results.get(name, []) if s in r and r[s].get(key) is not None]
    return float(np.mean(vals)) if vals else None


def failures(results: dict, name: str) -> list[str]:
    return [r["failed"] for r in results.get(name, []) if r.get("failed")]


def claims(R: dict) -> list[dict]:
    """Each seed claim: experiments, the numbers that decide it, and the verdict by an explicit rule."""
    def m(name, key, s="val"):
        return mean_over(R, name, s, key)

    def f(x, digits=3):
        return "-" if x is None else (f"{x:.{digits}g}" if isinstance(x, float) else str(x))

    rows = []

    # 1. tu=1 blows up, augmentation keeps it stable
    h1 = [m("tu1", "stable_horizon", s) for s in SETS]
    h1a = [m("tu1_aug", "stable_horizon", s) for s in SETS]
    full = m("tu1", "horizon")
    blows = any(h is not None and h < full for h in h1)
    aug_better = all(a is not None and h is not None and a >= h for a, h in zip(h1a, h1))
    rows.append({
        "claim": "tu=1: the latent roll-out blows up (at ~1500 steps); connectome augmentation keeps it stable",
        "experiments": ["tu1", "tu1_aug"],
        "numbers": f"stable horizon (val / CV natural / CV artificial, of {f(full)}): no augmentation "
                   f"{' / '.join(f(h) for h in h1)}; augmentation {' / '.join(f(h) for h in h1a)}",
        "verdict": "reproduced" if blows and aug_better and any(a > h for a, h in zip(h1a, h1) if a and h)
        else "partly" if blows else "not reproduced",
        "reason": "" if blows else "the tu=1 roll-out stays below the data variance for the whole horizon here "
                                   "(the trained network forgets its state in ~7 steps, so roll-outs cannot run away "
                                   "far)",
    })

    # 2. tu=5, loss at t+5 only: sawtooth / divergence inside the window
    obs, bet = m("tu5", "pn_obs"), m("tu5", "pn_between")
    h5 = m("tu5", "stable_horizon")
    saw = obs is not None and bet is not None and bet > 1.5 * obs
    rows.append({
        "claim": "tu=5 with a loss only at t+5: t+5 is learned, t+1..t+4 are not, and the latent roll-out diverges "
                 "within 100 steps",
        "experiments": ["tu5"],
        "numbers": f"pn at the observation points {f(obs)}, between them {f(bet)}; stable horizon {f(h5)}",
        "verdict": "reproduced" if saw and h5 is not None and h5 < 100
                   else "partly" if saw or (h5 or 10**9) < 100 else "not reproduced",
        "reason": "" if saw else "the steps between observations are predicted about as well as the observed ones",
    })

    # 3. intermediate loss at 3 or 4 stabilises
    ils = {k: (m(f"tu5_ils{k}", "pn_between"), m(f"tu5_ils{k}", "stable_horizon")) for k in (1, 2, 3, 4)}
    better = [k for k, (b, h) in ils.items() if b is not None and bet is not None and b < bet]
    rows.append({
        "claim": "an intermediate loss at step 3 or 4 (with t+5) stabilises tu=5 roll-outs and learns the steps in "
                 "between",
        "experiments": ["tu5", "tu5_ils1", "tu5_ils2", "tu5_ils3", "tu5_ils4"],
        "numbers": f"pn between observations: none {f(bet)}; "
                   + "; ".join(f"step {k}: {f(b)} (horizon {f(h)})" for k, (b, h) in ils.items()),
        "verdict": "reproduced" if {3, 4} <= set(better) else "partly" if better else "not reproduced",
        "reason": "" if {3, 4} <= set(better)
                  else "an intermediate loss does not lower the between-observation error here",
    })

    # 4. ems at tu=5
    ems = {e: (m("tu5" if e == 1 else f"tu5_ems{e}", "pn_in"), m("tu5" if e == 1 else f"tu5_ems{e}", "pn_beyond"),
               m("tu5" if e == 1 else f"tu5_ems{e}", "pn_in", "cv/natural_noiseless")) for e in (1, 2, 3, 5)}
    scored = [(v[0], e) for e, v in ems.items() if v[0] is not None]
    best_in = min(scored)[1] if scored else None
    e3_blows = ems[3][1] is not None and ems[3][0] is not None and ems[3][1] > 1.5 * ems[3][0]
    rows.append({
        "claim": "ems at tu=5: ems=5 gives the best validation roll-out (as good as one-step); ems=3 blows up past the "
                 "window",
        "experiments": ["tu5", "tu5_ems2", "tu5_ems3", "tu5_ems5"],
        "numbers": "; ".join(f"ems {e}: pn in window {f(v[0])}, beyond {f(v[1])}, CV natural in window {f(v[2])}"
                             for e, v in ems.items()),
        "verdict": "reproduced" if best_in == 5 and e3_blows
                   else "partly" if best_in == 5 or e3_blows else "not reproduced",
        "reason": ("" if best_in == 5 else f"ems={best_in} is best inside the window here; ")
        + ("" if e3_blows else "ems=3 does not blow up past the window here"),
    })

    # 5. tu10 worse than tu20
    t10 = (m("tu10", "pn_in"), m("tu10", "pn_beyond"))
    t20 = (m("tu20", "pn_in"), m("tu20", "pn_beyond"))
    worse = [a > b for a, b in zip(t10, t20) if a is not None and b is not None]
    rows.append({
        "claim": "tu=10 is worse than tu=20 (ems=5)",
        "experiments": ["tu10", "tu20"],
        "numbers": f"pn in window / beyond: tu10 {f(t10[0])} / {f(t10[1])}; tu20 {f(t20[0])} / {f(t20[1])}",
        "verdict": "reproduced" if worse and all(worse) else "partly" if any(worse) else "not reproduced",
        "reason": "" if worse and all(worse) else "observing twice as often helps here, as one would expect",
    })

    # 6. stability fixes: zero-init is the key change; activation minor; warm-up lowers intervening error
    names6 = ("tu20_nofix", "tu20_tanh", "tu20_zeroinit", "tu20_nowarmup", "tu20")
    v = {n: (m(n, "pn_in"), m(n, "pn_between"), m(n, "stable_horizon"), len(failures(R, n)), len(R.get(n, [])))
         for n in names6}

    def worse_than(a, b):  # a (without zero-init) failed or is worse than b
        return v[a][3] > 0 or (v[a][0] is not None and v[b][0] is not None and v[a][0] > v[b][0])

    with_zero_ok = all(v[n][3] == 0 for n in ("tu20_zeroinit", "tu20_nowarmup", "tu20"))
    key = with_zero_ok and worse_than("tu20_nofix", "tu20_zeroinit") and worse_than("tu20_tanh", "tu20_nowarmup")
    warm = v["tu20"][1] is not None and v["tu20_nowarmup"][1] is not None and v["tu20"][1] < v["tu20_nowarmup"][1]

    def desc(n, a, b, h, nf, ns):
        label = n.replace("tu20_", "") if n != "tu20" else "all fixes"
        if nf:
            why = f" ({failures(R, n)[0].replace('error: ', '')[:70]}...)" if nf == ns else ""
            return f"{label}: diverged in {nf}/{ns} seeds{why}"
        return f"{label}: pn in window {f(a)}, between obs {f(b)}, horizon {f(h)}"

    rows.append({
        "claim": "tu=20 stability fixes: zero-init of the evolver's last layer is the key change, the activation "
                 "(Tanh vs ReLU) matters little, the reconstruction warm-up lowers the intervening-step error",
        "experiments": list(names6),
        "numbers": "; ".join(desc(n, *vals) for n, vals in v.items()),
        "verdict": "reproduced" if key and warm else "partly" if key or warm else "not reproduced",
        "reason": ("" if key else "the variants without zero-init are not worse here; ")
        + ("" if warm else "the warm-up does not lower the between-observation error here"),
    })

    # 7. the historical evolver's sawtooth
    o, b = m("tu20_nofix", "global_obs"), m("tu20_nofix", "global_between")
    nf7 = len(failures(R, "tu20_nofix"))
    saw20 = o is not None and b is not None and b > 10 * o
    rows.append({
        "claim": "without the fixes (ReLU, no zero-init, no warm-up) tu=20 shows a sawtooth: MSE ~1e-2 at the "
                 "observations, ~1 between them",
        "experiments": ["tu20_nofix"],
        "numbers": (f"diverged in {nf7}/{len(R.get('tu20_nofix', []))} seeds; " if nf7 else "")
        + f"global MSE at the observation points {f(o)}, between them {f(b)}",
        "verdict": "reproduced" if saw20
                   else "partly" if nf7 or (o is not None and b is not None and b > 2 * o) else "not reproduced",
        "reason": "" if saw20 else ("the historical evolver fails more drastically here: its 100-step unroll overflows "
                                    "(non-finite loss) before any sawtooth can be measured" if nf7 else
                                    "no sawtooth: the between-observation error stays close to the observed-frame "
                                    "error"),
    })

    # 8. staggered
    a_in, s_in = m("tu20", "pn_in"), m("tu20_staggered", "pn_in")
    lin = m("tu20_staggered", "linear_in")
    fails = s_in is not None and lin is not None and s_in >= lin
    rows.append({
        "claim": "time-aligned acquisition works at tu=20; staggered acquisition with the same model fails",
        "experiments": ["tu20", "tu20_staggered"],
        "numbers": f"pn in window: aligned {f(a_in)}, staggered {f(s_in)} (best linear baseline under staggered "
                   f"acquisition {f(lin)})",
        "verdict": "reproduced" if fails else "not reproduced",
        "reason": "" if fails else "neurocast encodes the per-neuron interpolation of the staggered samples (the "
                                   "seed's later working approach, latent_stag_interp.py), which beats the linear "
                                   "baselines",
    })

    # 9. tu=50 fails between observations
    t50 = {e: (m(f"tu50_ems{e}", "pn_between"), m(f"tu50_ems{e}", "interp_between"), m(f"tu50_ems{e}", "pn_in"),
               m(f"tu50_ems{e}", "pn_beyond"), m(f"tu50_ems{e}", "linear_in")) for e in (1, 2, 5)}
    fail50 = [e for e, (b, i, pin, pb, lin_) in t50.items() if b is not None and lin_ is not None and pin >= lin_]
    rows.append({
        "claim": "tu=50 fails to capture the dynamics between observations (ems 2/3 promising but blow up a little "
                 "beyond the window)",
        "experiments": ["tu50_ems1", "tu50_ems2", "tu50_ems5"],
        "numbers": "; ".join(f"ems {e}: pn between obs {f(b)} (interpolation oracle {f(i)}), in window {f(pin)} "
                             f"vs best linear {f(lin_)}, beyond {f(pb)}" for e, (b, i, pin, pb, lin_) in t50.items()),
        "verdict": "reproduced" if len(fail50) == 3 else "partly" if fail50 else "not reproduced",
        "reason": "" if len(fail50) == 3 else "at this scale tu=50 models beat the best linear baseline inside the "
                                              "window for ems "
                                              f"{', '.join(str(e) for e in (1, 2, 5) if e not in fail50)}",
    })
    return rows


def linear_table(R: dict) -> list[dict]:
    """Every preset against the best linear baseline (val, pn without R1-R8), mean over seeds."""
    out = []
    for name in sorted(R):
        row = {"experiment": name, "seeds": len(R[name]), "failed": len(failures(R, name))}
        for s in SETS:
            row[s] = {k: mean_over(R, name, s, k) for k in ("pn_in", "linear_in", "pn_beyond", "linear_beyond",
                                                            "stable_horizon")}
        seconds = [r["train_seconds"] for r in R[name] if r.get("train_seconds")]
        row["train_seconds"] = float(np.mean(seconds or [np.nan]))
        if row["val"]["pn_in"] is None:
            row["val"]["stable_horizon"] = None
        out.append(row)
    return out


def markdown(payload: dict) -> str:
    lines = [
        "# The seed's findings, reproduced at CPU scale",
        "",
        f"Command: `{payload['command']}`. Data: neurocast's trained fly network, extent 2 (1,203 cells; "
        "`configs/sim/fly_small.yaml`). Presets: `configs/seed/*.yaml` (each ~800 optimiser steps of 64 windows). "
        f"Seeds: {', '.join(map(str, payload['seeds']))}. pn = per-neuron MSE in each neuron's own training-variance "
        "units, averaged over neurons without R1-R8, of the latent roll-out (mean over seeds); horizon = stable "
        "horizon of 2000 steps.",
        "",
        "| claim of the seed | experiments | measured | verdict |",
        "|---|---|---|---|",
    ]
    for c in payload["claims"]:
        verdict = c["verdict"] + (f": {c['reason']}" if c["reason"] else "")
        lines.append(f"| {c['claim']} | {', '.join(c['experiments'])} | {c['numbers']} | **{verdict}** |")
    lines += ["", "## Every experiment against the best linear baseline (pn, in window / beyond)", "",
              "| experiment | val | CV natural | CV artificial | horizon (val) | train s |",
              "|---|---|---|---|---|---|"]

    def cell(d):
        if d["pn_in"] is None or d["linear_in"] is None:
            return "-"
        return (f"{d['pn_in']:.3f} vs {d['linear_in']:.3f} / {d['pn_beyond']:.3f} vs {d['linear_beyond']:.3f}"
                if d["pn_beyond"] is not None else f"{d['pn_in']:.3f} vs {d['linear_in']:.3f}")

    for r in payload["experiments"]:
        if r["failed"]:
            lines.append(f"| {r['experiment']} | diverged in {r['failed']}/{r['seeds']} seeds | | | | |")
            if r["failed"] == r["seeds"]:
                continue
        lines.append(f"| {r['experiment']} | {cell(r['val'])} | {cell(r['cv/natural_noiseless'])} | "
                     f"{cell(r['cv/artificial'])} | {r['val']['stable_horizon']} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "seed_findings"))
    ap.add_argument("--only", default=None, help="comma-separated preset names (default: all in configs/seed)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = sorted(p.stem for p in PRESETS.glob("[!_]*.yaml"))
    if args.only:
        names = [n for n in args.only.split(",") if n]
    runs = Path(args.runs).expanduser().resolve()
    jobs = [(n, s) for n in names for s in seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(lambda ns: (ns, run_one(ns[0], ns[1], runs)), jobs))
    R: dict[str, list] = {}
    for (name, seed), (run, error) in done:
        R.setdefault(name, []).append({"seed": seed, "failed": error} if error else {"seed": seed, **extract(run)})
    payload = {
        "machine": machine(),
        "command": "python benchmarks/seed_findings.py " + " ".join(sys.argv[1:]),
        "seeds": seeds,
        "runs": str(runs),
        "claims": claims(R),
        "experiments": linear_table(R),
        "per_run": R,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "seed_findings.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (RESULTS / "seed_findings.md").write_text(markdown(payload))
    print(RESULTS / "seed_findings.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
