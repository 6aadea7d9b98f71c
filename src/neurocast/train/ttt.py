"""Functional test-time training: adapting a POCO model to one session's data.

A session seen for the first time has no embeddings. Its *fast* parameters are a unit
table (D, d) and a session vector (1, d), created from an initialisation
(``learned``: the meta-learned init vectors; ``mean``: the mean of the trained
embeddings; ``random``: N(0, 0.02)), and used through
``torch.func.functional_call(model, fast, (batch,))`` on a batch whose unit ids and
session index are local (0..D-1, 0). Nothing else in the model changes.

:func:`inner_loop` takes gradient steps on the fast parameters with support windows.
With ``create_graph=False`` the gradients are constants (first-order MAML); with
``create_graph=True`` the outer loss differentiates through every inner step
(second-order, "E2E-TTT"). It is one code path, and ``adapt="all"`` adapts every
parameter of the model the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from neurocast.errors import ConfigError
from neurocast.models.forecast_base import ForecastBatch

EMBEDDINGS = ("unit_emb", "session_emb")


def double_backward_attention(enabled: bool = True):
    """Use the composite ('math') attention kernel: the fused CPU/GPU kernels have no
    second derivative, which E2E-TTT's outer gradient needs."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH) if enabled else nullcontext()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
    m = unit_mask[:, None, :].expand_as(pred)
    diff = torch.where(m, pred - target, torch.zeros((), device=pred.device, dtype=pred.dtype))
    return (diff * diff).sum() / m.sum().clamp_min(1)


def localise(batch: ForecastBatch) -> ForecastBatch:
    """A single-session batch with local unit ids (0..D-1) and session index 0."""
    B, D = batch.unit_mask.shape
    ids = torch.arange(D, device=batch.x.device).expand(B, D)
    return ForecastBatch(batch.x, batch.y, batch.unit_mask, torch.zeros_like(batch.session), batch.dataset, ids,
                         batch.starts)


def fast_init(model, n_units: int, init: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Fresh embedding tensors for a new session (functions of the model's parameters for 'learned'/'mean')."""
    d = model.cfg.hidden
    if init == "learned":
        if not hasattr(model, "init_unit"):
            raise ConfigError("embedding init 'learned' needs a meta-trained model (training.mode fomaml or e2e_ttt)")
        return {"unit_emb": model.init_unit.expand(n_units, d), "session_emb": model.init_session[None, :]}
    if init == "mean":
        return {"unit_emb": model.unit_emb.detach().mean(0, keepdim=True).expand(n_units, d).clone(),
                "session_emb": model.session_emb.detach().mean(0, keepdim=True).clone()}
    if init == "random":
        dev = model.unit_emb.device
        return {"unit_emb": (torch.randn(n_units, d, generator=generator) * 0.02).to(dev),
                "session_emb": (torch.randn(1, d, generator=generator) * 0.02).to(dev)}
    raise ConfigError(f"embedding init {init!r} is not one of learned, mean, random")


def forward_with(model, params: dict[str, torch.Tensor], batch: ForecastBatch, checkpointed: bool = False,
                 second_order: bool = False):
    """``model(batch)`` with ``params`` in place of the model's own tensors.

    ``second_order`` selects the attention kernel that has a second derivative. It is
    chosen inside the (possibly checkpointed) function, so that the recomputation in the
    backward pass, which runs outside any caller's context, uses the same kernel as the
    forward pass did (otherwise the saved tensors differ and checkpointing fails).
    """

    def run(p, b):
        with double_backward_attention(second_order):
            return functional_call(model, p, (b,))

    if checkpointed:
        return checkpoint(run, params, batch, use_reentrant=False)
    return run(params, batch)


def inner_loop(
    model,
    fast: dict[str, torch.Tensor],
    support: ForecastBatch,
    steps: int,
    lr: float,
    create_graph: bool,
    checkpointed: bool = False,
    loss_fn: Callable = masked_mse,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """``steps`` gradient steps on ``fast`` with the support batch; returns (fast', support losses)."""
    losses = []
    for _ in range(steps):
        pred = forward_with(model, fast, support, checkpointed, second_order=create_graph)
        loss = loss_fn(pred, support.y, support.unit_mask)
        names = [k for k, v in fast.items() if v.requires_grad]
        grads = torch.autograd.grad(loss, [fast[k] for k in names], create_graph=create_graph, allow_unused=True)
        new = dict(fast)
        for k, g in zip(names, grads):
            if g is not None:
                new[k] = fast[k] - lr * (g if create_graph else g.detach())
        fast = new
        losses.append(loss)
    return fast, losses


def adaptable(model, fast: dict[str, torch.Tensor], adapt: str) -> dict[str, torch.Tensor]:
    """The tensors the inner loop adapts: the fast embeddings, or every parameter ('all')."""
    out = {k: v if v.requires_grad else v.requires_grad_(True) for k, v in fast.items()}
    if adapt == "all":
        for name, p in model.named_parameters():
            if name not in EMBEDDINGS:
                out[name] = p
    elif adapt != "embeddings":
        raise ConfigError(f"adapt must be 'embeddings' or 'all', got {adapt!r}")
    return out
