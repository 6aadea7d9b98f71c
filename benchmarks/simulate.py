"""Fly visual system simulation speed: neuron-steps per second, single vs batched.

    python benchmarks/simulate.py            # extents 4, 8, 15
    python benchmarks/simulate.py --quick    # extents 4, 8

Reports, for each extent: time for 10 s of activity (500 steps at dt 20 ms) with one
sequence, per-sequence throughput with B sequences simulated together, and the ratio of
a bandwidth bound to the measured time (bound = bytes the sparse product must read and
write per step / memory bandwidth measured in the same run; 1.0 = running at memory
bandwidth). Targets: extent 8 single sequence <= 0.4 s for 10 s of activity; batched
throughput >= 3x single (both for the voltage simulation without process noise; rows with
calcium and with noise are reported too: drawing one Gaussian per neuron and step costs
about as much as the batched sparse product itself on a 2-core CPU, which caps the
batching gain when noise is on). Results go to benchmarks/results/simulate.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import memory_bandwidth, save
from neurocast.sim.fly_dynamics import FlySimulator
from neurocast.sim.fly_network import build_network
from neurocast.sim.fly_params import default_parameters, scale_gains

STEPS = 500  # 10 s at 20 ms


def spmm_bytes(n: int, e: int, b: int) -> int:
    # CSR values (f32) + column indices (i32) + row pointers (i32) + input and output vectors
    return 4 * e + 4 * e + 4 * (n + 1) + 2 * 4 * n * b


def paired_times(sim: FlySimulator, batch: int, calcium: bool, repeats: int = 9) -> tuple[float, float, float]:
    """Best single / batched times for STEPS steps and the median of per-repeat speedups.

    Single and batched runs alternate, so slow phases of a shared machine hit both alike.
    """
    channels = ("voltage", "calcium") if calcium else ("voltage",)
    rng = np.random.default_rng(0)
    block = 100
    runs = {}
    for b in (1, batch):
        state = sim.initial_state(b, warmup_s=0.1, calcium=calcium)
        stim = torch.from_numpy(rng.random((block, sim.n_columns, b), dtype=np.float32))
        sim.run(state, stim[:10], channels=channels)  # warm-up
        runs[b] = [state, stim]

    def once(b: int) -> float:
        state, stim = runs[b]
        t = time.perf_counter()
        for _ in range(STEPS // block):
            _, state = sim.run(state, stim, channels=channels)
        runs[b][0] = state
        return time.perf_counter() - t

    singles, batched = [], []
    for _ in range(repeats):
        singles.append(once(1))
        batched.append(once(batch))
    speedups = [batch * s / b for s, b in zip(singles, batched)]
    return min(singles), min(batched), float(np.median(speedups))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    bw = memory_bandwidth()
    rows = []
    for extent in (4, 8) if args.quick else (4, 8, 15):
        net = build_network(extent)
        params = scale_gains(net, default_parameters(net), 0.9, 2.0)
        N, E = net.n_nodes, net.n_edges
        for calcium, noise in ((False, 0.0), (True, 0.0), (False, 0.01)):
            sim = FlySimulator(net, params, dt=0.02, noise_std=noise)
            t1, tb, speedup = paired_times(sim, args.batch, calcium)
            single = N * STEPS / t1
            batched = N * STEPS * args.batch / tb
            row = {
                "extent": extent,
                "neurons": N,
                "edges": E,
                "channels": "voltage+calcium" if calcium else "voltage",
                "noise_std": noise,
                "single_seconds_per_10s": t1,
                "single_neuron_steps_per_s": single,
                "batch": args.batch,
                "batched_neuron_steps_per_s": batched,
                "batched_speedup": speedup,  # median of paired (interleaved) measurements
                "bandwidth_bound_ratio_single": spmm_bytes(N, E, 1) / bw / (t1 / STEPS),
                "bandwidth_bound_ratio_batched": spmm_bytes(N, E, args.batch) / bw / (tb / STEPS),
            }
            rows.append(row)
            print(
                f"extent {extent:2d} N={N:6d} E={E:8d} {row['channels']:16s} noise {noise:<4g} "
                f"single: {t1:6.3f} s / 10 s "
                f"({single / 1e6:6.1f} M neuron-steps/s, {row['bandwidth_bound_ratio_single']:.2f} of bw bound)  "
                f"batch {args.batch}: {batched / 1e6:6.1f} M/s (x{row['batched_speedup']:.1f}, "
                f"{row['bandwidth_bound_ratio_batched']:.2f} of bw bound)",
                flush=True,
            )
    e8 = [r for r in rows if r["extent"] == 8 and r["channels"] == "voltage" and r["noise_std"] == 0][0]
    targets = {
        "extent8_single_10s_le_0.4s": e8["single_seconds_per_10s"] <= 0.4,
        "extent8_batched_ge_3x_single": e8["batched_speedup"] >= 3.0,
    }
    path = save("simulate", {"memory_bandwidth_GBps": bw / 1e9, "steps": STEPS, "rows": rows, "targets": targets})
    print(f"memory bandwidth {bw / 1e9:.1f} GB/s; targets: {targets}; written {path}")


if __name__ == "__main__":
    main()
