"""Device selection and torch set-up, in one place for simulators, trainers and analyses."""

from __future__ import annotations

import torch

from neurocast.errors import DataError


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


def setup_torch(device: torch.device, *, tf32: bool = False, threads: int | None = None) -> None:
    """Set torch's CPU threads (``threads``, None keeps torch's choice) and, on CUDA, TF32 matrix products."""
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda" and tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
