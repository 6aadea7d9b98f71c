"""Multi-process (multi-GPU) training under torchrun.

``torchrun --nproc_per_node G -m neurocast train CONFIG`` starts G processes; each sees
WORLD_SIZE / RANK / LOCAL_RANK in its environment. neurocast then

* initialises the process group (``cpu:gloo,cuda:nccl`` on GPUs, so that a CPU tensor goes
  through gloo and a CUDA tensor through NCCL; gloo alone on CPUs) and binds each process
  to its GPU (``cuda:LOCAL_RANK``);
* gives every process the same seeded stream of batch indices; each process gathers only
  its own contiguous share of every global batch (``batch_size`` stays the *global* batch);
* reduces metrics on the device of the backend (``collective_device``), checked before
  every collective (``check_collective``);
* wraps model and objective in DistributedDataParallel, which averages the gradients, so
  a step equals one single-process step on the global batch;
* lets only rank 0 write: run directory, checkpoints, metrics, figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO: DistInfo | None = None


def setup() -> DistInfo:
    """Join the process group if launched by torchrun (idempotent); else a 1-process info."""
    global _INFO
    if _INFO is not None:
        return _INFO
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _INFO = DistInfo()
        return _INFO
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    if not torch.cuda.is_available() and "NEUROCAST_THREADS" not in os.environ:
        # processes share the CPU cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    _INFO = DistInfo(rank, world, local)
    return _INFO


def info() -> DistInfo:
    return _INFO or setup()


def device_for(name: str) -> str:
    """The device a process should use: its own GPU under torchrun."""
    d = info()
    if d.enabled and torch.cuda.is_available() and name in ("auto", "cuda"):
        return f"cuda:{d.local_rank}"
    return name


def broadcast(obj):
    """Rank 0's value of ``obj`` on every rank."""
    d = info()
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def backend_devices(backend: str) -> set[str]:
    """Device types whose tensors a process-group backend accepts: ``"nccl"`` -> {cuda},
    ``"gloo"`` -> {cpu, cuda}, ``"cpu:gloo,cuda:nccl"`` -> {cpu, cuda}."""
    backend = backend.lower()
    if ":" in backend:  # per-device backends
        return {part.split(":", 1)[0] for part in backend.split(",")}
    return {"nccl": {"cuda"}, "gloo": {"cpu", "cuda"}, "mpi": {"cpu", "cuda"}, "ucc": {"cpu", "cuda"}}.get(
        backend, {"cpu"})


def collective_device(backend: str, local_rank: int) -> torch.device:
    """Where a reduction's tensor should live: the process's GPU when the backend has NCCL
    (no host round trip, and NCCL rejects CPU tensors), else the CPU."""
    if "nccl" in backend.lower():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def check_collective(tensor: torch.Tensor, backend: str) -> torch.Tensor:
    """``tensor`` if the backend can reduce it, else a RuntimeError naming both (instead of
    NCCL's opaque failure, or a hang, on the first epoch of a multi-GPU run)."""
    if tensor.device.type not in backend_devices(backend):
        raise RuntimeError(f"a collective got a tensor on {tensor.device} but the {backend!r} backend "
                           f"takes only {', '.join(sorted(backend_devices(backend)))} tensors")
    return tensor


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over the processes, in one all-reduce."""
    d = info()
    if not d.enabled or not values:
        return dict(values)
    backend = str(dist.get_backend())
    t = torch.tensor([float(v) for v in values.values()], dtype=torch.float64,
                     device=collective_device(backend, d.local_rank))
    dist.all_reduce(check_collective(t, backend))
    return {k: float(v) / d.world for k, v in zip(values, t.tolist())}


def shard_rows(n: int) -> slice:
    """This rank's contiguous share of n rows (global batch -> local batch)."""
    d = info()
    if not d.enabled:
        return slice(0, n)
    if n % d.world:
        raise ValueError(f"the global batch ({n}) must divide evenly over {d.world} processes")
    k = n // d.world
    return slice(d.rank * k, (d.rank + 1) * k)


class LossModule(torch.nn.Module):
    """Model + objective as one module, so DistributedDataParallel sees the whole step."""

    def __init__(self, task):
        super().__init__()
        self.model = task.model
        self._task = task

    def forward(self, batch, epoch: int):
        return self._task.losses(batch, epoch)
