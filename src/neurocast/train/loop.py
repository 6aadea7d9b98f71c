"""One training loop for every model family, with pluggable tasks.

A *task* owns the model, the data iteration and the objective; the :class:`Trainer`
owns everything around them: optimiser steps, gradient clipping, NaN/Inf guard,
validation, checkpoints (latest every epoch, every N epochs, best, final), resume,
metrics, progress bars and early stopping. The trainer never knows where data came
from; tasks never write files.

Task interface (duck-typed)::

    task.model                         nn.Module
    task.start_epoch(epoch)            e.g. freeze modules during a warm-up
    task.batches(epoch) -> iterable    one epoch of batches (task-owned, seeded RNG)
    task.n_batches(epoch) -> int       for the progress bar
    task.losses(batch, epoch) -> dict  "total" is optimised, the rest logged (a task that ran
                                       backward itself returns "_grads_ready": True)
    task.batch_samples(batch) -> int
    task.validate(epoch) -> dict       must hold "val/loss" (lower is better)
    task.stop_check(epoch, metrics) -> (stop: bool, message)   optional, early stopping
    task.state_dict() / load_state_dict(state)     RNGs and fitted statistics
"""

from __future__ import annotations

import math
import signal
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from neurocast.checkpoints import (
    capture_rng_state,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint,
)
from neurocast.errors import CheckpointError, StorageError, TrainingError
from neurocast.progress import info, progress
from neurocast.runs import RunDir
from neurocast.train.tracking import Tracker


def build_optimizer(name: str, params, lr: float, kwargs: dict[str, Any] | None = None) -> torch.optim.Optimizer:
    cls = getattr(torch.optim, name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, torch.optim.Optimizer):
        raise TrainingError(f"optimizer {name!r} is not a torch.optim optimizer (e.g. Adam, AdamW, SGD, RMSprop)")
    try:
        return cls(params, lr=lr, **(kwargs or {}))
    except TypeError as exc:
        raise TrainingError(f"optimizer {name}: bad optimizer_kwargs {kwargs}: {exc}") from None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class Trainer:
    def __init__(
        self,
        task,
        optimizer: torch.optim.Optimizer,
        *,
        run: RunDir | None,
        tracker: Tracker | None,
        config: dict[str, Any],
        epochs: int,
        grad_clip: float = 0.0,
        checkpoint_every: int = 0,
        scheduler=None,
        is_main: bool | None = None,
        epoch_label=None,
    ):
        from neurocast import distributed

        self.dist = distributed.info()
        if is_main is None:
            is_main = self.dist.is_main
        self.ddp = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.local_rank] if next(task.model.parameters()).is_cuda else None
            self.ddp = DistributedDataParallel(distributed.LossModule(task), device_ids=ids,
                                               find_unused_parameters=True)
        self.task = task
        self.opt = optimizer
        self.scheduler = scheduler
        self.run = run if is_main else None
        self.tracker = tracker if is_main else None
        self.config = config
        self.epochs = int(epochs)
        self.grad_clip = float(grad_clip)
        self.checkpoint_every = int(checkpoint_every)
        self.is_main = is_main
        self.epoch_label = epoch_label or (lambda e: {})
        self.epoch = 0          # completed epochs
        self.step = 0           # optimiser steps
        self.best = math.inf
        self.best_epoch: int | None = None
        self.saved: dict[str, int] = {}   # checkpoint file name -> epoch it holds
        self.history: list[dict[str, Any]] = []
        self.stopped_early: str | None = None
        self.stop_requested: str | None = None  # set by SIGTERM/SIGUSR2: stop after this epoch
        self.train_seconds = 0.0  # time spent in optimiser steps (validation excluded)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.task.model).state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            "task": self.task.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "saved": dict(self.saved),
            "stopped_early": self.stopped_early,
            "config": self.config,
        }

    def save(self, name: str) -> Path | None:
        if self.run is None:
            return None
        try:
            path = save_checkpoint(self.run.checkpoints / name, self._state())
        except StorageError as exc:  # say what survives and how to go on
            kept = sorted(p.name for p in self.run.checkpoints.glob("*.pt"))
            advice = (f"the run keeps {', '.join(kept)}; free some space, then `neurocast train --resume "
                      f"{self.run.path}`"
                      if kept else "no checkpoint was written yet: the run starts again from scratch")
            raise StorageError(f"{exc}; {advice}") from None
        self.saved[name] = self.epoch
        return path

    def resume(self, path: str | Path, state: dict[str, Any] | None = None) -> None:
        """Continue exactly where the checkpoint was written (end of its epoch); ``state``:
        the checkpoint already loaded from ``path``."""
        if state is None:
            state = load_checkpoint(path)
        load_model_state(unwrap(self.task.model), state["model"], str(path))
        try:
            self.opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {path}: optimizer state does not match ({exc})") from None
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.task.load_state_dict(state["task"])
        restore_rng_state(state["rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best, self.best_epoch = float(state["best"]), state["best_epoch"]
        self.saved = dict(state["saved"])
        self.stopped_early = state.get("stopped_early")
        if self.run is not None:  # drop metrics logged after this checkpoint (a killed epoch)
            kept = [m for m in self.run.read_metrics() if m.get("epoch", 0) <= self.epoch]
            self.run.rewrite_metrics(kept)
            self.run.set_status("running")
            self.history = [m for m in kept if "train/total" in m or "val/loss" in m]
        self.restart_logs_at(self.epoch + 1)

    def restart_logs_at(self, step: int) -> None:
        """Drop what a killed attempt logged from ``step`` on (metrics.jsonl and TensorBoard)."""
        if self.run is not None and step <= 1:
            self.run.rewrite_metrics([])
        if self.tracker is not None:  # TensorBoard points of the killed epochs
            self.tracker.resume_at(step)

    # ------------------------------------------------------------------ training
    def fit(self) -> dict[str, Any]:
        model = self.task.model
        while self.epoch < self.epochs and self.stopped_early is None and self.stop_requested is None:
            epoch = self.epoch
            self.task.start_epoch(epoch)
            model.train()
            sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
            gnorm_sum, n_batches, samples = 0.0, 0, 0
            t0 = time.perf_counter()
            bar = progress(self.task.batches(epoch), total=self.task.n_batches(epoch),
                           desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch")
            for batch in bar:
                self.opt.zero_grad(set_to_none=True)
                if self.ddp is not None:  # the task's batches are this process's share of the global batch
                    losses = self.ddp(batch, epoch)
                else:
                    losses = self.task.losses(batch, epoch)
                # a task may run backward itself (gradient accumulation over sub-batches)
                grads_ready = bool(losses.pop("_grads_ready", False))
                total = losses["total"]
                if not torch.isfinite(total):
                    self._diverged(epoch, losses)
                if not grads_ready:
                    total.backward()
                params = [p for p in model.parameters() if p.grad is not None]
                if self.grad_clip > 0:
                    gnorm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                else:
                    gnorm = (torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))
                             if params else torch.zeros(()))
                if not torch.isfinite(gnorm):
                    self._diverged(epoch, {**losses, "grad_norm": gnorm})
                self.opt.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.step += 1
                n_batches += 1
                samples += self.task.batch_samples(batch)
                gnorm_sum += float(gnorm)
                for k, v in losses.items():
                    sums[k] = sums[k] + v.detach().float().cpu()
            bar.close()
            elapsed = time.perf_counter() - t0
            self.train_seconds += elapsed
            train = {f"train/{k}": float(v) / max(n_batches, 1) for k, v in sums.items()}
            if self.dist.enabled:  # the global batch's loss = mean of the processes' shares
                from neurocast.distributed import mean_over_ranks

                train = mean_over_ranks(train)
                samples *= self.dist.world
            model.eval()
            tv = time.perf_counter()
            with torch.no_grad():
                val = self.task.validate(epoch)
            self.epoch = epoch + 1
            record = {
                "epoch": self.epoch,
                **self.epoch_label(epoch),
                **train,
                **val,
                "train/grad_norm": gnorm_sum / max(n_batches, 1),
                "train/lr": self.opt.param_groups[0]["lr"],
                "time/epoch_s": elapsed,
                "time/validation_s": time.perf_counter() - tv,
                "throughput/samples_per_s": samples / elapsed if elapsed > 0 else None,
            }
            stop, why = (False, "")
            if hasattr(self.task, "stop_check"):
                stop, why = self.task.stop_check(epoch, record)
                record.update(getattr(self.task, "last_stop_record", {}) or {})
            self.history.append(record)
            if self.tracker is not None:
                self.tracker.log(record, step=self.epoch)
            vloss = val.get("val/loss")
            improved = vloss is not None and math.isfinite(vloss) and vloss < self.best
            if improved:
                self.best, self.best_epoch = float(vloss), self.epoch
            info(
                f"epoch {self.epoch}/{self.epochs}: train loss {train.get('train/total', float('nan')):.4g}"
                + (f", val loss {vloss:.4g}" if vloss is not None else "")
                + (" (best)" if improved else "")
                + f", {elapsed:.1f} s"
            )
            if stop:
                self.stopped_early = why
                info(f"early stopping after epoch {self.epoch}: {why}")
            if self.is_main:
                if improved:
                    self.save("best.pt")
                if record.get("early_stop/improved"):
                    self.save("best_early_stop.pt")  # best by the early-stopping criterion
                if self.checkpoint_every and self.epoch % self.checkpoint_every == 0:
                    self.save(f"epoch_{self.epoch:04d}.pt")
                self.save("latest.pt")
        if self.is_main and self.stop_requested is None:  # a stopped run is not final
            self.save("final.pt")
        if self.tracker is not None:
            self.tracker.flush()
        return self.summary()

    def request_stop(self, why: str) -> None:
        self.stop_requested = why
        info(f"{why}: stopping after the current epoch (resume with `neurocast train --resume`)")

    def _diverged(self, epoch: int, losses: dict[str, torch.Tensor]) -> None:
        parts = ", ".join(f"{k}={float(v.detach() if torch.is_tensor(v) else v):.4g}" for k, v in losses.items())
        last = None
        if self.run is not None and (self.run.checkpoints / "latest.pt").exists():
            last = self.run.checkpoints / "latest.pt"
        if self.run is not None:  # epoch and step numbered like the message (from 1)
            self.run.set_status("failed")
            self.run.log({"epoch": epoch + 1, "step": self.step + 1, "event": "diverged",
                          "losses": {k: float(v.detach() if torch.is_tensor(v) else v) for k, v in losses.items()}})
        keep = f"; the last good checkpoint is {last}" if last else "; no checkpoint was written yet"
        raise TrainingError(
            f"training diverged at epoch {epoch + 1}, step {self.step + 1}: loss is not finite ({parts}); "
            f"try a lower learning rate or gradient clipping{keep}"
        )

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {
            "epochs_completed": self.epoch,
            "steps": self.step,
            "final_val_loss": last.get("val/loss"),
            "best_val_loss": None if not math.isfinite(self.best) else self.best,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "terminated_by": self.stop_requested,
            "seconds_per_step": self.train_seconds / self.step if self.step else None,
            "checkpoints": dict(sorted(self.saved.items())),
        }


#: the stop signal this process received (SIGTERM/SIGUSR2), kept so that a pipeline training
#: several models (seeds, methods) stops them all and the CLI exits with 128 + its number
_STOP_SIGNAL: list[int] = []


def stop_signal() -> int | None:
    """The SIGTERM/SIGUSR2 this process received while training, or None."""
    return _STOP_SIGNAL[-1] if _STOP_SIGNAL else None


@contextmanager
def graceful_stop(trainer: Trainer):
    """SIGTERM / SIGUSR2 (cluster pre-emption, time limits) finish the epoch, checkpoint and stop.

    A signal received before (while an earlier seed or method trained) stops this trainer
    before its first epoch."""
    previous = {}

    def handler(signum, frame):
        _STOP_SIGNAL.append(signum)
        trainer.request_stop(f"received {signal.Signals(signum).name}")

    if stop_signal() is not None:
        trainer.request_stop(f"received {signal.Signals(stop_signal()).name}")

    for sig in (signal.SIGTERM, getattr(signal, "SIGUSR2", None)):
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
