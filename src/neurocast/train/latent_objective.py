"""The multi-step objective of latent-dynamics training.

For a batch of windows starting at s (see :mod:`neurocast.data.latent_windows`)::

    z_0     = E(x_in(s))
    z_{k+1} = z_k + f([z_k, S(stim(s + k))])          k = 0 .. T - 1
    recon   = l(D(z_0), x(s))
    evolve  = sum_{m=1..M} l(D(z_{m tu}), x(s + m tu))   (+ intermediate_loss_steps in (0, tu))
    reg     = sum_module coeff_module x sum_tensors mean|w|
    aug     = coeff x l(D(z_1 from x_aug)[:, sel], D(z_1)[:, sel])    (unconnected_to_zero)
    total   = recon + evolve + reg + aug

M ramps from 1 to ``evolve_multiple_steps`` during ``ems_warmup_epochs``. In staggered
acquisition every step has a (masked) target: each neuron is compared where it was
observed, and the evolve term is the sum over steps divided by tu, i.e. one term per
observation interval on average, like the aligned modes.

Connectome augmentation: K neurons are drawn (without replacement), every neuron that
is neither one of them nor presynaptic to one of them is zeroed in the input (zero =
the training mean after normalisation), and the one-step predictions of the K neurons
from the reduced and the full input must agree: what a neuron does next may depend only
on the neurons that can influence it.
"""

from __future__ import annotations

import numpy as np
import torch

from neurocast.data.connectome import Connectome
from neurocast.data.latent_windows import Batch
from neurocast.errors import ConfigError
from neurocast.eval.metrics import masked_loss
from neurocast.models.latent import LatentModel


def active_multiples(ems: int, warmup_epochs: int, main_epoch: int) -> int:
    """Loss multiples used in main epoch ``main_epoch`` (0-based): 1 -> ems over the warm-up."""
    if warmup_epochs <= 0 or ems <= 1:
        return ems
    return int(min(ems, 1 + (ems - 1) * main_epoch // warmup_epochs))


class Augmentation:
    """Sampler for the unconnected_to_zero augmentation (seeded, state checkpointed)."""

    def __init__(self, connectome: Connectome | None, num_neurons: int, loss_coeff: float, seed: int):
        self.k = int(num_neurons)
        self.coeff = float(loss_coeff)
        self.enabled = self.k > 0 and self.coeff > 0
        if self.enabled and connectome is None:
            raise ConfigError(
                "training.unconnected_to_zero needs a connectome, but the training recording has none "
                "(set training.unconnected_to_zero.num_neurons 0)"
            )
        self.connectome = connectome
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))

    def sample(self, n_neurons: int) -> tuple[np.ndarray, np.ndarray]:
        """(selected neurons, keep mask (N,)) with keep = selected or presynaptic to one of them."""
        sel = self.rng.choice(n_neurons, size=min(self.k, n_neurons), replace=False)
        keep = np.zeros(n_neurons, dtype=bool)
        keep[sel] = True
        keep[self.connectome.presynaptic_union(sel)] = True
        return np.sort(sel), keep


def unroll_losses(
    model: LatentModel,
    batch: Batch,
    loss_name: str,
    max_step: int,
    time_units: int,
    staggered: bool,
    augmentation: Augmentation | None = None,
) -> dict[str, torch.Tensor]:
    """Loss terms of one batch, unrolling up to ``max_step`` evolver steps."""
    z = model.encode(batch.x0)
    s_enc = model.encode_stimulus(batch.stim)
    recon = masked_loss(loss_name, model.decode(z), batch.recon, batch.recon_mask)
    step_index = {st: j for j, st in enumerate(batch.steps)}
    evolve = torch.zeros((), device=z.device)
    aug = torch.zeros((), device=z.device)
    for k in range(1, max_step + 1):
        s_k = None if s_enc is None else s_enc[:, k - 1]
        z_prev = z
        z = model.evolve(z, s_k)
        if k == 1 and augmentation is not None and augmentation.enabled:
            aug = augmentation_loss(model, batch, z, s_k, loss_name, augmentation)
        if k in step_index:
            j = step_index[k]
            mask = None if batch.masks is None else batch.masks[:, j]
            term = masked_loss(loss_name, model.decode(z), batch.targets[:, j], mask)
            evolve = evolve + (term / time_units if staggered else term)
        del z_prev
    reg = model.l1_penalty()
    total = recon + evolve + reg + aug
    return {"total": total, "recon": recon, "evolve": evolve, "reg": reg, "aug": aug}


def augmentation_loss(model, batch: Batch, z1, s0, loss_name: str, augmentation: Augmentation) -> torch.Tensor:
    sel, keep = augmentation.sample(batch.x0.shape[1])
    keep_t = torch.as_tensor(keep, device=batch.x0.device)
    x_aug = torch.where(keep_t, batch.x0, torch.zeros((), device=batch.x0.device))
    z_aug = model.evolve(model.encode(x_aug), s0)
    sel_t = torch.as_tensor(sel, device=batch.x0.device)
    pred = model.decode(z1)[:, sel_t]
    pred_aug = model.decode(z_aug)[:, sel_t]
    return augmentation.coeff * masked_loss(loss_name, pred_aug, pred, None)


def reconstruction_losses(model: LatentModel, batch: Batch, loss_name: str) -> dict[str, torch.Tensor]:
    """Warm-up objective: encoder/decoder reconstruction + their L1 terms only."""
    recon = masked_loss(loss_name, model.decode(model.encode(batch.x0)), batch.recon, batch.recon_mask)
    reg = torch.zeros((), device=recon.device)
    for name in ("encoder", "decoder"):
        coeff = model.l1[name]
        if coeff > 0:
            for p in getattr(model, name).parameters():
                reg = reg + coeff * p.abs().mean()
    return {"total": recon + reg, "recon": recon, "reg": reg}
