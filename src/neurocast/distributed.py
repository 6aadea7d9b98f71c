"""Multi-process (multi-GPU) training under torchrun.

``torchrun --nproc_per_node G -m neurocast train CONFIG`` starts G processes; each sees
WORLD_SIZE / RANK / LOCAL_RANK in its environment. neurocast then

* initialises the process group (NCCL on GPUs, gloo on CPUs) and binds each process to
  its GPU (``cuda:LOCAL_RANK``);
* gives every process the same seeded data stream and keeps, of each global batch, only
  its own contiguous share (``batch_size`` stays the *global* batch);
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
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
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


def mean_over_ranks(value: float) -> float:
    d = info()
    if not d.enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / d.world


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
