"""On-disk store at scale: write and read a 1e6-frame x 13,741-neuron recording in chunks.

    python benchmarks/store.py [--frames 1000000] [--neurons 13741] [--folder /tmp]
    python benchmarks/store.py --simulate      # the same size from the extent-8 simulator

Writes a recording of ``frames`` x ``neurons`` float32 (55 GB at full size) block by block
through RecordingWriter, then reads random 65,536-frame ranges (the anchor's chunk) and
finally every frame in chunks, checking the exact round trip against the regenerated
data. Reports throughput and the process's peak resident memory after each phase (it
must stay far below the 24 GB of the machine, i.e. independent of the length). The
data is a smooth random signal (like voltage traces), so compression is realistic.
``--simulate`` instead runs configs/sim/fly_extent8.yaml with 1e6 voltage frames.
The store is deleted at the end. Results: benchmarks/results/store.json.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common import save
from neurocast.data.store import RecordingWriter, default_chunk_steps, open_recording


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def block(seed: int, t0: int, n: int, neurons: int, state: dict) -> np.ndarray:
    """Deterministic smooth signal: an AR(1) process per neuron, continued across blocks."""
    rng = np.random.default_rng([seed, t0])
    noise = rng.standard_normal((n, neurons), dtype=np.float32) * 0.1
    out = np.empty((n, neurons), dtype=np.float32)
    x = state.get("x", np.zeros(neurons, np.float32))
    for t in range(n):
        x = 0.95 * x + noise[t]
        out[t] = x
    state["x"] = x
    return out


def synthetic(args) -> dict:
    folder = Path(tempfile.mkdtemp(dir=args.folder))
    path = folder / "big.zarr"
    T, N = args.frames, args.neurons
    chunk = default_chunk_steps(N)
    blk = chunk * 8
    res: dict = {"frames": T, "neurons": N, "bytes": T * N * 4, "chunk_steps": chunk}
    try:
        t = time.perf_counter()
        state: dict = {}
        with RecordingWriter(path, n_neurons=N, dt=0.02, channels=["voltage"], chunk_steps=chunk) as w:
            for t0 in range(0, T, blk):
                w.append({"voltage": block(1, t0, min(blk, T - t0), N, state)})
        res["write_s"] = time.perf_counter() - t
        res["write_MBps"] = T * N * 4 / res["write_s"] / 1e6
        res["disk_bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        res["peak_rss_after_write_GB"] = peak_rss_gb()
        print(f"wrote {T} x {N} ({T * N * 4 / 1e9:.1f} GB) in {res['write_s']:.0f} s "
              f"({res['write_MBps']:.0f} MB/s), {res['disk_bytes'] / 1e9:.1f} GB on disk, peak RSS "
              f"{res['peak_rss_after_write_GB']:.2f} GB", flush=True)

        rec = open_recording(path)
        rng = np.random.default_rng(0)
        reads = []
        for _ in range(5):
            a = int(rng.integers(0, max(1, T - 65536)))
            t = time.perf_counter()
            x = rec.read(a, min(T, a + 65536))
            reads.append(time.perf_counter() - t)
            assert x.shape == (min(T, a + 65536) - a, N)
            del x  # hold one range at a time (3.6 GB at full size), as a data loader would
        res["random_65536_frame_read_s_median"] = float(np.median(reads))
        res["peak_rss_after_random_reads_GB"] = peak_rss_gb()
        print(f"random 65,536-frame reads: median {res['random_65536_frame_read_s_median']:.2f} s; "
              f"peak RSS {res['peak_rss_after_random_reads_GB']:.2f} GB", flush=True)

        t = time.perf_counter()
        state = {}
        exact = True
        for t0 in range(0, T, blk):
            n = min(blk, T - t0)
            exact &= bool(np.array_equal(rec.read(t0, t0 + n), block(1, t0, n, N, state)))
        res["sequential_read_and_verify_s"] = time.perf_counter() - t
        res["exact_round_trip"] = exact
        res["peak_rss_final_GB"] = peak_rss_gb()
        print(f"sequential read + verify: {res['sequential_read_and_verify_s']:.0f} s, exact={exact}, "
              f"peak RSS {res['peak_rss_final_GB']:.2f} GB", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return res


def simulated(args) -> dict:
    from neurocast.presets_index import resolve_config_path
    from neurocast.sim import simulate
    from neurocast.tasks import load_task_config

    folder = Path(tempfile.mkdtemp(dir=args.folder))
    seqs = 16
    dur = args.frames / seqs * 0.02
    cfg = load_task_config(resolve_config_path("configs/sim/fly_extent8.yaml"), [
        "--channels", "voltage", "--recordings.train.duration-s", str(dur),
        "--recordings.train.sequences", str(seqs), "--batch", "16",
    ])
    cfg.recordings = {"train": cfg.recordings["train"]}
    try:
        t = time.perf_counter()
        out = simulate(cfg, folder / "ds")
        el = time.perf_counter() - t
        rec = open_recording(out / "train.zarr")
        res = {
            "frames": rec.T, "neurons": rec.N, "simulate_and_write_s": el,
            "frames_per_s": rec.T / el, "peak_rss_GB": peak_rss_gb(),
            "disk_bytes": sum(p.stat().st_size for p in (out / "train.zarr").rglob("*") if p.is_file()),
        }
        print(f"simulated {rec.T} x {rec.N} in {el:.0f} s ({res['frames_per_s']:.0f} frames/s); "
              f"peak RSS {res['peak_rss_GB']:.2f} GB; {res['disk_bytes'] / 1e9:.1f} GB on disk", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--neurons", type=int, default=13741)
    ap.add_argument("--folder", default=None, help="where to write the temporary store")
    ap.add_argument("--simulate", action="store_true")
    args = ap.parse_args()
    res = simulated(args) if args.simulate else synthetic(args)
    path = save("store_simulate" if args.simulate else "store", res)
    print(f"written {path}")


if __name__ == "__main__":
    main()
