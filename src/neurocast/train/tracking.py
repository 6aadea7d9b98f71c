"""Where metrics go: metrics.jsonl always, TensorBoard by default, Weights & Biases on request.

Metric names are hierarchical ("train/loss", "val/loss", "val/mse_at_20"), written as is
to TensorBoard and W&B and as keys of each metrics.jsonl record. Only the process of
rank 0 writes (multi-GPU runs create trackers with ``enabled=False`` elsewhere).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from neurocast.runs import RunDir


class Tracker:
    def __init__(self, run: RunDir | None, logging_cfg=None, config: dict | None = None, enabled: bool = True,
                 purge_step: int | None = None):
        self.run = run if enabled else None
        self.tb = None
        self.wandb = None
        if self.run is None:
            return
        if getattr(logging_cfg, "tensorboard", True):
            self._open_tensorboard(purge_step)
        wb = getattr(logging_cfg, "wandb", None)
        if wb is not None and wb.enabled:
            self.wandb = start_wandb(wb, self.run, config or {})

    def _open_tensorboard(self, purge_step: int | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(self.run.path / "tensorboard"), purge_step=purge_step)
        except Exception as exc:  # tensorboard missing/broken: metrics.jsonl still has everything
            print(f"warning: TensorBoard disabled ({exc})", file=sys.stderr)
            self.tb = None

    def resume_at(self, step: int) -> None:
        """A resumed run logs again from ``step``: TensorBoard drops the points a killed run
        wrote at ``step`` and later (``purge_step``), so curves have no duplicates."""
        if self.tb is not None:
            self.tb.close()
            self._open_tensorboard(step)

    def log(self, record: dict[str, Any], step: int) -> None:
        """Append to metrics.jsonl and send the numeric entries to TensorBoard / W&B."""
        if self.run is None:
            return
        self.run.log({"step": step, **record})
        scalars = {
            k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) and "/" in k
        }
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None and scalars:
            self.wandb.log(scalars, step=step)

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def start_wandb(cfg, run: RunDir, config: dict):
    """Start a W&B run (offline mode works without network); None with a warning if unavailable."""
    try:
        import wandb
    except ImportError:
        print("warning: logging.wandb.enabled is set but wandb is not installed (pip install wandb); "
              "continuing without it", file=sys.stderr)
        return None
    try:
        return wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            mode=cfg.mode,
            dir=str(run.path),
            name=f"{run.path.parent.name}/{run.path.name}",
            config={**config, "run_dir": str(run.path)},
            notes=f"neurocast run directory: {run.path}",
        )
    except Exception as exc:
        print(f"warning: wandb.init failed ({exc}); continuing without W&B", file=sys.stderr)
        return None
