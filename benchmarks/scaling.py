"""Cost exponents from the recorded benchmark results, and what large runs cost: docs/scaling.md.

    python benchmarks/scaling.py        # reads results/simulate.json, train_latent.json, poco_timing.json

Nothing is measured here: every number comes from a result file written by another benchmark
(named beside it, with its date and machine), and every exponent is a least-squares fit of
log(cost) on log(size) over the sizes that file holds. Projections multiply a measured cost by
the fitted power of the size ratio; they are CPU projections for the machine that measured them.
No GPU figure appears because none was measured (a GPU user runs the same benchmarks there).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common import RESULTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"


def fit(sizes, costs) -> float:
    """The exponent k of cost ~ size^k (least squares in log-log)."""
    return float(np.polyfit(np.log(sizes), np.log(costs), 1)[0])


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _when(res: dict) -> str:
    m = res.get("machine", {})
    cores, threads = m.get("cpu_count", "?"), m.get("torch_threads", "?")
    return f"{m.get('date', '?')}, {m.get('cpu', 'cpu')} ({cores} cores, {threads} threads)"


def simulation(res: dict) -> list[str]:
    rows = [r for r in res["rows"] if r["channels"] == "voltage" and r["noise_std"] == 0.0]
    n = [r["neurons"] for r in rows]
    single = [r["single_seconds_per_10s"] for r in rows]
    batched = [r["neurons"] * 500 / r["batched_neuron_steps_per_s"] for r in rows]  # seconds per sequence-10 s
    k1, kb = fit(n, single), fit(n, batched)
    big = rows[-1]
    steps_per_10s = 10.0 / 0.02
    sec_1e6 = big["single_seconds_per_10s"] * 1e6 / steps_per_10s
    lines = [
        "## Simulation (`benchmarks/simulate.py`, results/simulate.json)",
        "",
        f"Measured {_when(res)}: voltage only, no noise, dt 20 ms.",
        "",
        "| extent | neurons | one sequence, s per 10 s | 32 sequences batched, s per sequence-10 s |",
        "|---|---|---|---|",
        *[f"| {r['extent']} | {r['neurons']:,} | {s:.3f} | {b:.4f} |" for r, s, b in zip(rows, single, batched)],
        "",
        f"Fitted exponents: one sequence ~ N^{k1:.2f}, batched ~ N^{kb:.2f} (N = neurons; edges per neuron"
        " are 29-33 at every extent, so N and edges give nearly the same exponent).",
        "",
        f"**1e6 frames of the full 45,669-neuron network** (extent 15): one sequence {sec_1e6:.0f} s "
        f"({sec_1e6 / 60:.1f} min) on this machine, from its measured {big['single_seconds_per_10s']:.3f} s per "
        "500 steps. Writing them to a store is a separate cost: 1e6 x 13,741 float32 (55 GB) took 554 s"
        " (results/store.json), so 1e6 x 45,669 (183 GB) would take about "
        f"{554 * 45669 / 13741:.0f} s at the same write rate (linear in bytes).",
        "",
    ]
    return lines


def latent(res: dict) -> list[str]:
    rows = res["rows"]
    per_sample = [r["seconds_per_step_median"] / r["batch"] for r in rows]
    n = [r["neurons"] for r in rows]
    k = fit(n, per_sample) if len(rows) > 1 else float("nan")
    lines = [
        "## Latent model training step (`benchmarks/train_latent.py`, results/train_latent.json)",
        "",
        f"fp32 matmul peak {res['matmul_peak_gflops']:.0f} GFLOP/s measured in the same run.",
        "",
        "| configuration | neurons | batch | parameters | s per step | s per sample | fraction of matmul peak |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r['name']} | {r['neurons']:,} | {r['batch']} | {r['parameters']:,} | "
          f"{r['seconds_per_step_median']:.3f} | "
          f"{p:.2e} | {r['mfu']:.0%} |" for r, p in zip(rows, per_sample)],
        "",
        f"Cost per sample ~ N^{k:.2f} between these two points, which also differ in model width (the"
        " extent-8 row is the anchor's full-size model), so read it as the cost of the recommended"
        " configuration at each size, not of one fixed model.",
        "",
    ]
    return lines


def _before(r: dict) -> str:
    ref = (r.get("variants") or {}).get("reference")
    return f"{ref['seconds_per_step_median']:.3f} s, {ref['fraction_of_matmul_peak']:.0%}" if ref else "-"


def poco(res: dict) -> list[str]:
    t = res.get("timing") or res
    rows = t.get("rows")
    if not rows:
        return ["## POCO training step", "", "results/poco_timing.json has no per-size rows yet: run "
                "`python benchmarks/poco.py --timing-only`.", ""]
    units = [r["units"] for r in rows]
    sec = [r["seconds_per_step_median"] for r in rows]
    k = fit(units, sec)
    per_step_40 = sec[units.index(130)] if 130 in units else float("nan")
    lines = [
        "## POCO training step (`benchmarks/poco.py --timing-only`, results/poco_timing.json)",
        "",
        f"64 windows per step, AdamW; {t.get('threads', '?')} torch thread(s), load average "
        f"{t.get('load_1min', '?')} on {t.get('cpu_count', '?')} cores when measured; fp32 matmul peak "
        f"{t['matmul_peak_gflops']:.0f} GFLOP/s measured in the same run.",
        "",
        "| units per session | s per step | GFLOP per step | fraction of matmul peak | before (one-expression "
        "FiLM, default allocator) |",
        "|---|---|---|---|---|",
        *[f"| {r['units']:,} | {r['seconds_per_step_median']:.3f} | {r['flops_per_step'] / 1e9:.1f} | "
          f"{r['fraction_of_matmul_peak']:.0%} | {_before(r)} |" for r in rows],
        "",
        "The step is neurocast's: the FiLM readout in row blocks (neurocast.models.film; outputs and gradients"
        " equal the one-expression readout within float32 rounding, tests/test_film.py) and freed memory kept"
        " for reuse (neurocast.devices.keep_freed_memory, which changes no number).",
        "",
        f"Fitted exponent: step time ~ units^{k:.2f}.",
        "",
        f"**A 40-session POCO run with 10,000 steps** (64 windows per step, ~130 units per session as in the"
        f" C. elegans recordings): the step cost depends on the windows per step, not on the number of"
        f" sessions, so {per_step_40:.2f} s x 10,000 = {per_step_40 * 10000 / 3600:.1f} h on this machine.",
        "",
    ]
    return lines


def render() -> str:
    """The text of docs/scaling.md from the current results."""
    parts = ["# Scaling", "", "Generated by `python benchmarks/scaling.py` from the recorded benchmark results; "
             "nothing here was extrapolated from a figure that was not measured. All numbers are CPU"
             " measurements of the machine named in each section. GPU costs are not given: no GPU"
             " measurement has been recorded.", ""]
    for name, fn in (("simulate", simulation), ("train_latent", latent), ("poco_timing", poco)):
        res = _load(name)
        parts += fn(res) if res else [f"## {name}", "", f"results/{name}.json not recorded yet.", ""]
    return "\n".join(parts)


def main() -> None:
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render())
    print(f"written {DOC}")


if __name__ == "__main__":
    main()
