"""The one adaptation loop of the project: gradient steps on a model's fast tensors.

Meta-training's inner loop, meta-validation and test-time adaptation (``neurocast adapt``,
the adaptation protocol) all call :func:`inner_loop`. It takes SGD or Adam steps (written
functionally, so that both can be differentiated through) on the fast tensors
(:mod:`neurocast.models.functional`) with support windows. With ``create_graph=False`` the
gradients are constants (first-order MAML); with ``create_graph=True`` the outer loss
differentiates through every inner step (second-order, "E2E-TTT"). Per-group step sizes
may be tensors (Meta-SGD: learned log-step-sizes, ``model.inner_log_lr``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from neurocast.data.forecast_batch import ForecastBatch
from neurocast.errors import ConfigError
from neurocast.eval.metrics import masked_mse
from neurocast.models.functional import forward_with, group_lrs


def inner_loop(
    model,
    fast: dict[str, torch.Tensor],
    support: ForecastBatch | Callable[[int], ForecastBatch],
    steps: int,
    lr: float | None,
    create_graph: bool,
    checkpointed: bool = False,
    optimizer: str = "sgd",
    track: bool = True,
    callback: Callable[[int, dict[str, torch.Tensor], torch.Tensor], bool] | None = None,
    names: list[str] | None = None,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """``steps`` gradient steps on the fast tensors with the support batch; returns (fast', support losses).

    ``support`` is a batch, or a function of the step (0-based) returning one (mini-batches).
    ``lr`` None uses the model's learned per-group step sizes. ``optimizer``: ``sgd`` or
    ``adam`` (bias-corrected, betas 0.9 / 0.999). ``track=False`` cuts every step from the
    previous one (plain adaptation; memory does not grow with the steps); meta-training
    keeps the chain so that the outer loss reaches the initialisation. ``callback(k,
    fast, loss)`` runs after step k (1-based); returning True stops the loop. ``names``:
    the fast tensors that take steps (default: every one that requires a gradient).
    """
    if optimizer not in ("sgd", "adam"):
        raise ConfigError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    b1, b2, eps = 0.9, 0.999, 1e-8
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    names = [k for k, v in fast.items() if v.requires_grad] if names is None else list(names)
    lrs = group_lrs(model, names, lr)
    losses = []
    for k in range(steps):
        b = support(k) if callable(support) else support
        pred = forward_with(model, fast, b, checkpointed, second_order=create_graph)
        loss = masked_mse(pred, b.y, b.unit_mask, per_unit=True)
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=create_graph, allow_unused=True)
        new = dict(fast)
        for n, g in zip(names, grads):
            if g is None:
                continue
            g = g if create_graph else g.detach()
            if optimizer == "adam":
                m, v = moments.get(n, (torch.zeros_like(g), torch.zeros_like(g)))
                m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
                moments[n] = (m, v)
                g = (m / (1 - b1 ** (k + 1))) / ((v / (1 - b2 ** (k + 1))).sqrt() + eps)
            step = fast[n] - lrs[n] * g
            new[n] = step if track else step.detach().requires_grad_(True)
        fast = new
        losses.append(loss if track else loss.detach())
        if callback is not None and callback(k + 1, fast, loss.detach()):
            break
    return fast, losses
