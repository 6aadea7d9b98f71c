"""Fly visual system simulation speed: the step against its bandwidth bound, and throughput.

    python benchmarks/simulate.py            # extents 4, 8, 15
    python benchmarks/simulate.py --quick    # extents 4, 8

(a) The step. Seconds per Euler step of neurocast's CPU step (the Euler update folded into
    one weighted gather-sum per cell, neurocast.sim.fly_dynamics) and of the equation as written
    (``reference_step``: relu, product, stimulus, lerp), alternating in one run, for 1 and B
    sequences, on one thread (two threads on this 2-core VM varied by 40% between runs: any
    other activity stalls one of them and the other waits). Bound: the bytes a step must read,
      - streamed once per step: the connectome (4 + 4 bytes per synapse, row pointers), the
        voltage read and written (2 x 4 N B), k and V_rest (2 x 4 N);
      - gathered: every synapse reads its presynaptic cell's B rectified voltages (4 E B bytes),
    all of which pass through the core's load ports, at best at the L1 read bandwidth (torch
    summing a 16 KB buffer), while the streamed bytes also come from the cache level (or memory)
    their working set (connectome + three N x B arrays) lives in (torch summing a buffer that
    size): bound = max(all bytes / L1 bandwidth, streamed bytes / working-set bandwidth), both
    bandwidths measured in the same run on the same thread. ratio = bound / best measured block
    of steps (1.0 = at the bound; best, because the bandwidths are the best of several
    measurements too). Why this bound: with B = 32 the gathers are 85-95% of the bytes and hit
    in cache (a presynaptic cell feeds ~30 others, so its row is reused while hot); a bound that
    charged them at the bandwidth of a buffer the size of relu(V) was beaten by the measured step
    at extents 8 and 15 (ratios 1.01 and 1.04), so it was not a bound. (The ratio recorded before
    this divided the streamed bytes alone by the DRAM copy bandwidth and timed ``run``, whose
    fresh output blocks were page-faulted in: neither was the step's bound.) For one sequence the
    gathers are single floats at random rows, one load each: latency- and instruction-bound, so
    the bandwidth ratio is low by nature there.
(b) Throughput through ``FlySimulator.run``, with freed memory kept for reuse as ``neurocast
    simulate`` runs (neurocast.devices.keep_freed_memory; extent 8 is measured once before that
    with glibc's default allocator, which page-faults every fresh output block in): time for 10 s
    of activity (500 steps at dt 20 ms) with one sequence, and per-sequence throughput with B
    sequences simulated together (rows with calcium and with noise too: drawing one Gaussian
    per neuron and step costs about as much as the batched product itself on a 2-core CPU). Targets: extent 8 single
    sequence <= 0.4 s for 10 s of activity; batched throughput >= 3x single; the batched step
    >= 0.6 of its bound at extents 4, 8, 15. Results go to benchmarks/results/simulate.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import load, memory_bandwidth, read_bandwidth, save
from neurocast.devices import keep_freed_memory
from neurocast.sim.fly_dynamics import FlySimulator, threads_for
from neurocast.sim.fly_network import build_network
from neurocast.sim.fly_params import default_parameters, load_parameters
from neurocast.sim.fly_simulation import TRAINED_PARAMETERS

STEPS = 500  # 10 s at 20 ms


def step_bound(N: int, E: int, B: int) -> dict:
    """The step's bandwidth bound (see the module docstring), measured now on this thread."""
    streamed = 8 * E + 4 * (N + 1) + 2 * 4 * N * B + 2 * 4 * N
    gathered = 4 * E * B
    working_set = 8 * E + 4 * (N + 1) + 3 * 4 * N * B
    bw_ws, bw_l1 = read_bandwidth(working_set), read_bandwidth(16 * 2**10)
    return {"streamed_bytes": streamed, "gathered_bytes": gathered, "working_set_bytes": working_set,
            "bandwidth_working_set_GBps": bw_ws / 1e9, "bandwidth_l1_GBps": bw_l1 / 1e9,
            "bound_seconds": max((streamed + gathered) / bw_l1, streamed / bw_ws)}


def step_rows(extents, batch: int, repeats: int = 9, steps: int = 50) -> list[dict]:
    """Seconds per step, folded vs reference (alternating), and the bound, per extent and batch size."""
    rows = []
    for extent in extents:
        net = build_network(extent)
        sim = FlySimulator(net, load_parameters(TRAINED_PARAMETERS, net, default_parameters(net)), dt=0.02)
        N, E = net.n_nodes, net.n_edges
        for B in (1, batch):
            g = torch.Generator().manual_seed(0)
            V = torch.randn(N, B, generator=g)
            x = torch.rand(net.n_columns, B, generator=g)
            out = torch.empty_like(V)
            variants = {"folded": lambda sim=sim, V=V, x=x, out=out: sim._folded_step(V, x, out),
                        "reference": lambda sim=sim, V=V, x=x, out=out: sim.reference_step(V, x, out)}
            with threads_for(0, torch.device("cpu")):  # one thread (see the docstring)
                threads = torch.get_num_threads()
                times = {k: [] for k in variants}
                for f in variants.values():
                    f()
                for _ in range(repeats):
                    for k, f in variants.items():
                        t = time.perf_counter()
                        for _ in range(steps):
                            f()
                        times[k].append((time.perf_counter() - t) / steps)
                bound = step_bound(N, E, B)
            row = {"extent": extent, "neurons": N, "edges": E, "batch": B, "threads": threads, **bound,
                   **{f"{k}_seconds_per_step": float(np.median(v)) for k, v in times.items()},
                   **{f"{k}_seconds_per_step_best": float(min(v)) for k, v in times.items()}}
            # the best block of each, as the bandwidths are the best the machine showed
            row["ratio_to_bound"] = row["bound_seconds"] / row["folded_seconds_per_step_best"]
            row["reference_ratio_to_bound"] = row["bound_seconds"] / row["reference_seconds_per_step_best"]
            rows.append(row)
            print(f"extent {extent:2d} B {B:3d} ({threads} thread(s)): folded "
                  f"{1e3 * row['folded_seconds_per_step']:.3f} ms, reference "
                  f"{1e3 * row['reference_seconds_per_step']:.3f} ms; bound "
                  f"{1e3 * row['bound_seconds']:.3f} ms ({(row['streamed_bytes'] + row['gathered_bytes']) / 2**20:.1f}"
                  f" MB at the L1 bandwidth {row['bandwidth_l1_GBps']:.0f} GB/s; working set "
                  f"{row['working_set_bytes'] / 2**20:.1f} MB at {row['bandwidth_working_set_GBps']:.0f} GB/s): "
                  f"{row['ratio_to_bound']:.2f} of the bound "
                  f"(reference {row['reference_ratio_to_bound']:.2f})", flush=True)
    return rows


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
    extents = (4, 8) if args.quick else (4, 8, 15)
    steps = step_rows(extents, args.batch)
    bw = memory_bandwidth()
    # run() writes every frame into fresh output blocks: with glibc's default allocator each
    # block is page-faulted in again; measure that once, then as `neurocast simulate` runs
    net = build_network(8)
    sim = FlySimulator(net, load_parameters(TRAINED_PARAMETERS, net, default_parameters(net)), dt=0.02)
    default_alloc = dict(zip(("single_seconds_per_10s", "batched_seconds_per_10s", "batched_speedup"),
                             paired_times(sim, args.batch, False)))
    kept = keep_freed_memory()
    print(f"extent 8, default allocator: single {default_alloc['single_seconds_per_10s']:.3f} s / 10 s, batched "
          f"{default_alloc['batched_seconds_per_10s']:.3f} s / 10 s; kept memory from here on: {kept}", flush=True)
    rows = []
    for extent in extents:
        net = build_network(extent)
        params = load_parameters(TRAINED_PARAMETERS, net, default_parameters(net))
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
            }
            rows.append(row)
            print(
                f"extent {extent:2d} N={N:6d} E={E:8d} {row['channels']:16s} noise {noise:<4g} "
                f"single: {t1:6.3f} s / 10 s ({single / 1e6:6.1f} M neuron-steps/s)  "
                f"batch {args.batch}: {batched / 1e6:6.1f} M/s (x{row['batched_speedup']:.1f})",
                flush=True,
            )
    e8 = [r for r in rows if r["extent"] == 8 and r["channels"] == "voltage" and r["noise_std"] == 0][0]
    targets = {
        "extent8_single_10s_le_0.4s": e8["single_seconds_per_10s"] <= 0.4,
        "extent8_batched_ge_3x_single": e8["batched_speedup"] >= 3.0,
        "batched_step_ge_0.6_of_bound": all(r["ratio_to_bound"] >= 0.6 for r in steps if r["batch"] > 1),
    }
    path = save("simulate", {"memory_bandwidth_GBps": bw / 1e9, "steps": STEPS, "step_rows": steps, "rows": rows,
                             "kept_freed_memory": kept, "extent8_voltage_default_allocator": default_alloc,
                             "targets": targets, **load()})
    print(f"DRAM copy bandwidth {bw / 1e9:.1f} GB/s; targets: {targets}; written {path}")


if __name__ == "__main__":
    main()
