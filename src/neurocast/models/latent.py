"""Encoder -> latent evolver -> decoder model of a population's dynamics.

    z(t)     = encoder(x(t))                       N -> L
    s(t)     = stimulus_encoder(stim(t))           S -> L_s
    z(t + 1) = z(t) + f([z(t), s(t)])             residual evolver, f zero-initialised
    x^(t)    = decoder(z(t))                       L -> N

One evolver step is one frame; with observations every ``time_units`` frames the evolver
is unrolled that many steps between two observations. The model knows nothing about
files, runs or how often data are observed: trainers and evaluators unroll it.
"""

from __future__ import annotations

import torch
from torch import nn

from neurocast.models.mlp import MLP
from neurocast.schema.latent import LatentModelConfig


class LatentModel(nn.Module):
    def __init__(self, n_neurons: int, stimulus_dims: int | None, cfg: LatentModelConfig):
        super().__init__()
        self.n_neurons = int(n_neurons)
        self.latent_dims = cfg.latent_dims
        e, d, v, s = cfg.encoder, cfg.decoder, cfg.evolver, cfg.stimulus_encoder
        bn = cfg.use_batch_norm
        self.encoder = MLP(n_neurons, cfg.latent_dims, e.num_hidden_units, e.num_hidden_layers, cfg.activation, bn,
                           e.use_input_skips)
        self.decoder = MLP(cfg.latent_dims, n_neurons, d.num_hidden_units, d.num_hidden_layers, cfg.activation, bn,
                           d.use_input_skips)
        self.stimulus_dims = int(stimulus_dims) if (stimulus_dims and cfg.use_stimulus) else 0
        if self.stimulus_dims:
            self.stimulus_encoder = MLP(
                self.stimulus_dims, s.num_output_dims, s.num_hidden_units, s.num_hidden_layers,
                cfg.activation, False, s.use_input_skips,
            )
            stim_latent = s.num_output_dims
        else:
            self.stimulus_encoder = None
            stim_latent = 0
        self.evolver = MLP(
            cfg.latent_dims + stim_latent, cfg.latent_dims, v.num_hidden_units, v.num_hidden_layers,
            v.activation, bn, v.use_input_skips,
        )
        if v.zero_init:
            self.evolver.zero_last_layer()
        self.l1 = {"encoder": e.l1_reg_loss, "decoder": d.l1_reg_loss, "evolver": v.l1_reg_loss}

    # building blocks ---------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def encode_stimulus(self, stim: torch.Tensor | None) -> torch.Tensor | None:
        """Encode a stimulus (..., S); None when the model does not use a stimulus."""
        if self.stimulus_encoder is None or stim is None:
            return None
        return self.stimulus_encoder(stim)

    def evolve(self, z: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        """One residual step z -> z + f([z, s]) (``s`` already encoded)."""
        inp = z if s is None else torch.cat([z, s], dim=-1)
        return z + self.evolver(inp)

    def forward(self, x: torch.Tensor, stim: torch.Tensor | None = None) -> torch.Tensor:
        """One-step prediction x(t+1) from x(t) and stim(t)."""
        return self.decode(self.evolve(self.encode(x), self.encode_stimulus(stim)))

    def l1_penalty(self) -> torch.Tensor:
        """Sum over regularised modules of coeff x sum over parameter tensors of mean|p|."""
        total = torch.zeros((), device=next(self.parameters()).device)
        for name, coeff in self.l1.items():
            if coeff > 0:
                for p in getattr(self, name).parameters():
                    total = total + coeff * p.abs().mean()
        return total
