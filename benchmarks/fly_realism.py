"""How realistic is the simulated fly visual system? The untrained initialisation, flyvis's
task-trained ensemble members and neurocast's own trained parameters, side by side.

    python benchmarks/fly_realism.py [--flyvis DIR] [--members 0-9] [--extents 2,8]

For every network and extent (``neurocast fly diagnose`` numbers, noise-free naturalistic
stimuli; DSI with ON/OFF edges in 12 directions at 3 speeds, flyvis's definition): median
DSI of T4a-d (ON edges) and T5a-d (OFF edges), forgetting time in steps (dt = 20 ms),
photoreceptor (R1-R8) variance share and the share of near-silent cells. Writes
results/fly_realism.json and results/fly_realism.md. ``--flyvis`` defaults to
../shared/data/flyvis_pretrained/flow/0000 (what `flyvis download-pretrained` leaves on disk).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("median_dsi_t4", "median_dsi_t5", "forgetting_steps", "photoreceptor_variance_share", "silent_fraction")


def members(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flyvis", default=str(ROOT.parent / "shared" / "data" / "flyvis_pretrained" / "flow" / "0000"))
    ap.add_argument("--members", default="0-9")
    ap.add_argument("--extents", default="2,8")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from neurocast.sim.fly_diagnostics import DiagnosticsSpec, diagnose
    from neurocast.sim.fly_network import build_network
    from neurocast.sim.fly_params import default_parameters, file_provenance, load_parameters, scale_gains
    from neurocast.sim.fly_simulation import TRAINED_PARAMETERS
    from neurocast.sim.flyvis_pretrained import load_flyvis_parameters

    torch.set_num_threads(args.threads)
    spec = DiagnosticsSpec()
    flyvis = Path(args.flyvis)
    rows = []
    for extent in (int(e) for e in args.extents.split(",")):
        net = build_network(extent)
        nets = {
            "untrained (flyvis init)": default_parameters(net),
            "untrained, gain 0.9 / inh x2 (old demo)": scale_gains(net, default_parameters(net), 0.9, 2.0),
            "neurocast trained": load_parameters(TRAINED_PARAMETERS, net, default_parameters(net)),
        }
        if flyvis.is_dir():
            for m in members(args.members):
                nets[f"flyvis {m:03d}"] = load_flyvis_parameters(flyvis, net, m)
        else:
            print(f"flyvis ensemble {flyvis} not found: members skipped", file=sys.stderr)
        for name, params in nets.items():
            t0 = time.perf_counter()
            s = diagnose(net, params, spec)["summary"]
            rows.append({"extent": extent, "network": name, **{k: s[k] for k in KEYS}})
            print(f"extent {extent} {name:42s} " + " ".join(f"{k}={s[k]}" for k in KEYS)
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)

    summary = []
    for extent in sorted({r["extent"] for r in rows}):
        fly = [r for r in rows if r["extent"] == extent and r["network"].startswith("flyvis")]
        ours = next(r for r in rows if r["extent"] == extent and r["network"] == "neurocast trained")
        entry = {"extent": extent, "neurocast_trained": {k: ours[k] for k in KEYS}}
        if fly:
            rng = {k: [float(np.min([r[k] for r in fly if r[k] is not None])),
                       float(np.max([r[k] for r in fly if r[k] is not None]))] for k in KEYS}
            entry["flyvis_range"] = rng
            entry["within_flyvis_range"] = {
                k: bool(rng[k][0] <= ours[k] <= rng[k][1])
                for k in ("median_dsi_t4", "median_dsi_t5", "photoreceptor_variance_share")
            }
        summary.append(entry)
    payload = {
        "command": "python benchmarks/fly_realism.py " + " ".join(sys.argv[1:]),
        "trained_parameters": str(TRAINED_PARAMETERS.relative_to(ROOT) if TRAINED_PARAMETERS.is_relative_to(ROOT)
                                  else TRAINED_PARAMETERS),
        "trained_provenance": file_provenance(TRAINED_PARAMETERS),
        "spec": {k: v for k, v in vars(spec).items() if k != "extra"},
        "rows": rows,
        "summary": summary,
    }
    path = save("fly_realism", payload)
    (RESULTS / "fly_realism.md").write_text(markdown(payload))
    print(path)
    return 0


def markdown(p: dict) -> str:
    lines = [
        "# Fly visual system realism",
        "",
        f"Command: `{p['command']}` (machine and date in fly_realism.json). Naturalistic stimuli, noise-free; DSI",
        "with ON/OFF edges in 12 directions at 3 speeds (flyvis's definition, central cell); forgetting time in",
        "steps of 20 ms; near-silent = voltage std < 1e-3.",
        "",
        "| extent | network | median DSI T4 (ON) | median DSI T5 (OFF) | forgetting (steps) | R1-R8 variance share | "
        "silent cells |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in p["rows"]:
        f = "-" if r["forgetting_steps"] is None else str(r["forgetting_steps"])
        lines.append(f"| {r['extent']} | {r['network']} | {r['median_dsi_t4']:.2f} | {r['median_dsi_t5']:.2f} | {f} | "
                     f"{100 * r['photoreceptor_variance_share']:.1f}% | {100 * r['silent_fraction']:.1f}% |")
    lines.append("")
    for s in p["summary"]:
        if "flyvis_range" not in s:
            continue
        rng, ours = s["flyvis_range"], s["neurocast_trained"]
        inside = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in s["within_flyvis_range"].items())
        lines.append(f"- extent {s['extent']}: flyvis members span T4 DSI "
                     f"{rng['median_dsi_t4'][0]:.2f}-{rng['median_dsi_t4'][1]:.2f}, "
                     f"T5 DSI {rng['median_dsi_t5'][0]:.2f}-{rng['median_dsi_t5'][1]:.2f}, R1-R8 share "
                     f"{100 * rng['photoreceptor_variance_share'][0]:.1f}-"
                     f"{100 * rng['photoreceptor_variance_share'][1]:.1f}%, "
                     f"forgetting {rng['forgetting_steps'][0]:.0f}-{rng['forgetting_steps'][1]:.0f} steps; neurocast "
                     "trained: "
                     f"T4 {ours['median_dsi_t4']:.2f}, T5 {ours['median_dsi_t5']:.2f}, R1-R8 "
                     f"{100 * ours['photoreceptor_variance_share']:.1f}%, "
                     f"forgetting {ours['forgetting_steps']} steps. Within the members' range: {inside}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
