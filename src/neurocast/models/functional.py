"""Functional use of a forecasting model: other tensors in place of its own, for test-time training.

A session seen for the first time has no embeddings. Its *fast* parameters are a unit
table (D, d) and a session vector (1, d), created by :func:`fast_init` from an
initialisation (``learned``: the meta-learned init vectors; ``mean``: the mean of the
trained embeddings; ``random``: N(0, 0.02)), and used through
``torch.func.functional_call(model, fast, (batch,))`` (:func:`forward_with`) on a batch
whose unit ids and session index are local (0..D-1, 0: :func:`localise`). Other parameters
join the fast set by named group (:data:`GROUPS`: ``units``, ``session``, ``film``,
``output``, ``backbone``; aliases ``embeddings`` = units + session and ``all``); the
model's own tensors never change. The loop that takes gradient steps on them is
:func:`neurocast.eval.inner_loop.inner_loop`.
"""

from __future__ import annotations

import torch
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from neurocast.data.forecast_batch import ForecastBatch
from neurocast.errors import ConfigError
from neurocast.models.poco import ADAPT_GROUPS

EMBEDDINGS = ("unit_emb", "session_emb")


def double_backward_attention(enabled: bool = True):
    """Use the composite ('math') attention kernel: the fused CPU/GPU kernels have no
    second derivative, which E2E-TTT's outer gradient needs."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH) if enabled else nullcontext()


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


#: disjoint parameter groups that test-time training can adapt, in a fixed order
GROUPS = ADAPT_GROUPS
#: group aliases accepted wherever groups are named
ALIASES = {"embeddings": ("units", "session"), "all": GROUPS}
#: never adapted: the meta-learned initialisation and step sizes
NOT_ADAPTED = ("init_unit", "init_session", "inner_log_lr")


def expand_groups(params) -> tuple[str, ...]:
    """('embeddings',) -> ('units', 'session'); validates names; keeps GROUPS order."""
    names = [params] if isinstance(params, str) else list(params)
    out = set()
    for n in names:
        if n in ALIASES:
            out.update(ALIASES[n])
        elif n in GROUPS:
            out.add(n)
        else:
            raise ConfigError(f"parameter group {n!r} is not one of {', '.join([*GROUPS, *ALIASES])}")
    if not out:
        raise ConfigError("no parameter group to adapt")
    return tuple(g for g in GROUPS if g in out)


def group_of(name: str) -> str | None:
    """The group of a fast-parameter name (None for tensors that are never adapted)."""
    if name == "unit_emb":
        return "units"
    if name == "session_emb":
        return "session"
    if name in NOT_ADAPTED:
        return None
    if name.startswith(("alpha.", "beta.")):
        return "film"
    if name.startswith("out."):
        return "output"
    return "backbone"


def adaptable(model, fast: dict[str, torch.Tensor], adapt="embeddings",
              detach: bool = False) -> dict[str, torch.Tensor]:
    """The fast tensors for ``adapt`` groups: the new session's embeddings plus the model's
    parameters of the other chosen groups (as they are, so an outer loss reaches them, or
    detached copies with ``detach`` for plain test-time adaptation)."""
    groups = expand_groups(adapt)
    out = {}
    for k, v in fast.items():
        v = v.detach().clone() if detach else v
        if group_of(k) in groups and not v.requires_grad:
            v = v.requires_grad_(True)
        out[k] = v
    for name, p in model.named_parameters():
        g = group_of(name)
        if name in EMBEDDINGS or g is None or g not in groups:
            continue
        out[name] = p.detach().clone().requires_grad_(True) if detach else p
    return out


def adapted_names(fast: dict[str, torch.Tensor], adapt) -> list[str]:
    """The fast tensors that take gradient steps for the ``adapt`` groups."""
    groups = expand_groups(adapt)
    return [k for k in fast if group_of(k) in groups]


def group_lrs(model, names, lr: float | None) -> dict[str, float | torch.Tensor]:
    """Step size per fast tensor: ``lr``, or the model's learned per-group step sizes (Meta-SGD) when lr is None."""
    if lr is not None:
        return {n: lr for n in names}
    if not hasattr(model, "inner_log_lr"):
        raise ConfigError("no learning rate given and the model has no learned step sizes (meta.learn_inner_lr)")
    return {n: model.inner_log_lr[GROUPS.index(group_of(n))].exp() for n in names}
