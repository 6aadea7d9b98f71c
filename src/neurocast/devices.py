"""Device selection and torch set-up, in one place for simulators, trainers and analyses."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from neurocast.errors import DataError

#: environment variable: ``system`` leaves the C library's allocator as it is
ALLOCATOR_ENV = "NEUROCAST_CPU_ALLOCATOR"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_kept = None


def select_device(device: str | None) -> torch.device:
    """The torch device a config names: ``auto`` (or None) is CUDA when available, else CPU; ``cpu``,
    ``cuda``, ``cuda:N`` as given. A device that is not valid, or CUDA where there is none, is a
    one-line error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DataError(f"device {device!r} is not a valid torch device (use auto, cpu, cuda, cuda:0)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device {device!r} was asked for but CUDA is not available here")
    return dev


def keep_freed_memory(limit: int = 2**31 - 1) -> bool:
    """Let the C library reuse freed tensor memory instead of returning it to the system.

    glibc serves every allocation above 32 MB (one (8320, 1024) float32 activation) with a
    fresh ``mmap`` and gives it back on free, so each training step page-faults all of its
    large tensors in again: writing a fresh 34 MB tensor took 13 ms on the 2-core VM the
    benchmarks ran on, against 0.6 ms for writing a reused one. Raising the mmap and trim
    thresholds to ``limit`` bytes keeps that memory in the heap (resident memory stays at the
    step's peak, as with GPU caching allocators). A no-op (False) where the C library is not
    glibc, or with the environment variable ``NEUROCAST_CPU_ALLOCATOR=system``. Returns whether
    the thresholds are set.
    """
    global _kept
    choice = os.environ.get(ALLOCATOR_ENV, "keep")
    if choice not in ("keep", "system"):
        raise DataError(f"environment variable {ALLOCATOR_ENV}={choice!r} is not one of keep, system")
    if _kept is None:
        _kept = False
        if choice == "keep" and sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):
                return False
            _kept = bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
    return _kept


def setup_torch(device: torch.device, *, tf32: bool = False, threads: int | None = None) -> None:
    """Set torch's CPU threads (``threads``, None keeps torch's choice), on CPU keep freed memory
    for reuse (:func:`keep_freed_memory`) and, on CUDA, TF32 matrix products."""
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda" and tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
