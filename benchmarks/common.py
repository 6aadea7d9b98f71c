"""Shared helpers for benchmarks: machine description, memory bandwidth, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def memory_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Sustained read+write bandwidth (bytes/s) of a large array copy, best of ``repeats``."""
    a = np.ones(n_bytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best


def read_bandwidth(n_bytes: int, repeats: int = 7) -> float:
    """Read bandwidth (bytes/s) of torch summing a float32 buffer of ``n_bytes``, best of
    ``repeats``, with this process's threads: the bandwidth of the cache level (or memory) that
    a working set of that size lives in once touched. The buffer is summed as many times as
    make ~64 MB in one call (a stride-0 view over it), so call overhead does not count for
    buffers small enough to sit in L1."""
    import torch

    a = torch.rand(max(n_bytes // 4, 256))
    view = a.expand(max(1, 2**24 // a.numel()), -1)
    view.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        view.sum()
        best = min(best, time.perf_counter() - t)
    return view.numel() * 4 / best


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """The fp32 matrix-multiply rate (FLOP/s) of this process's threads: best of ``repeats``
    (n x n) @ (n x n) products. The bound that compute-bound benchmarks divide by."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def time_step(step, repeats: int, warm: bool = True) -> tuple[int | None, list[float]]:
    """(FLOPs of one call of ``step`` counted by torch's FlopCounterMode, wall seconds of
    ``repeats`` further calls), after one warm-up call (allocations, optimizer state).
    ``warm=False``: no warm-up and no FLOP count (None), only the timed calls."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = None
    if warm:
        step()
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return flops, times


def load() -> dict:
    """What else was running: the 1/5/15-minute load averages and the CPU count (a result
    measured with load above the core count shares the cores with something else)."""
    one, five, fifteen = os.getloadavg()
    return {"load_1min": round(one, 2), "load_5min": round(five, 2), "load_15min": round(fifteen, 2),
            "cpu_count": os.cpu_count()}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
