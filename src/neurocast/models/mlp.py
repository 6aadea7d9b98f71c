"""Multi-layer perceptrons, optionally with input-skip projections.

``MLP(in, out, hidden, layers)``: ``layers`` hidden layers of width ``hidden`` (Linear ->
optional BatchNorm -> activation), then a Linear to ``out``. With ``input_skips`` every
hidden layer and the output layer also receive a direct linear projection of the input:

    h_1 = act(A_1 x + b_1)
    h_k = act(A_k h_{k-1} + Q_k x + b_k)          k >= 2
    y   = A_out h_L + Q_out x + b_out

This is the function class of the anchor's "MLP with input skips" (which concatenates
an input projection to each layer's input and mixes it with another matrix); writing
the skip as one direct map per layer drops that redundant H x H factor. Skip MLPs
never use batch norm (as in the anchor).
"""

from __future__ import annotations

import torch
from torch import nn

from neurocast.errors import ConfigError


def activation(name: str) -> nn.Module:
    """A torch.nn activation by class name (ReLU, Tanh, GELU, SiLU, ...)."""
    cls = getattr(nn, name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ConfigError(f"activation {name!r} is not a torch.nn module (e.g. ReLU, Tanh, GELU, SiLU, ELU)")
    return cls()


class MLP(nn.Module):
    def __init__(
        self,
        in_dims: int,
        out_dims: int,
        hidden: int,
        layers: int,
        act: str = "ReLU",
        batch_norm: bool = False,
        input_skips: bool = False,
    ):
        super().__init__()
        self.input_skips = bool(input_skips)
        self.hidden = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.skips = nn.ModuleList()
        width = in_dims
        for k in range(layers):
            self.hidden.append(nn.Linear(width, hidden))
            self.norms.append(nn.BatchNorm1d(hidden) if batch_norm and not input_skips else nn.Identity())
            if input_skips and k > 0:
                self.skips.append(nn.Linear(in_dims, hidden, bias=False))
            width = hidden
        self.act = activation(act)
        self.out = nn.Linear(width, out_dims)
        self.out_skip = nn.Linear(in_dims, out_dims, bias=False) if input_skips and layers > 0 else None

    def zero_last_layer(self) -> None:
        """Make the output exactly zero at initialisation (residual nets start as identity)."""
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if self.out_skip is not None:
            nn.init.zeros_(self.out_skip.weight)

    def _flat(self, x: torch.Tensor, fn) -> torch.Tensor:
        # BatchNorm1d needs 2-D input: fold leading dims
        if x.dim() == 2:
            return fn(x)
        lead = x.shape[:-1]
        return fn(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._flat(x, self._forward2d)

    def _forward2d(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for k, (lin, norm) in enumerate(zip(self.hidden, self.norms)):
            pre = lin(h)
            if self.input_skips and k > 0:
                pre = pre + self.skips[k - 1](x)
            h = self.act(norm(pre))
        y = self.out(h)
        if self.out_skip is not None:
            y = y + self.out_skip(x)
        return y
