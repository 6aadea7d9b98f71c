"""Task-training the fly visual system (after Lappalainen et al., Nature 2024), no files.

:class:`TrainableFlyNetwork` is the connectome-constrained network of :mod:`neurocast.sim`
with its free parameters as ``nn.Parameter``: per cell type a time constant and a resting
potential, per (source type, target type) pair a synaptic strength. Signs and synapse counts
stay fixed; strengths (>= 0, as flyvis clamps them) and time constants are learnt as logarithms.
Its forward pass is the simulator's Euler step, differentiable end to end (back-propagation
through time)::

    V <- V + dt / max(tau, dt) * (-V + V_rest + W relu(V) + x(t))

:class:`FlowDecoder` reads the voltages of the output cell types (T1-T5, Tm, TmY) on the hex
lattice and predicts the optic flow (2 values per column) with two hexagonal convolutions,
as flyvis's decoder does on its Cartesian grid.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neurocast.sim.fly_network import FlyNetwork
from neurocast.sim.fly_params import FlyParameters

MIN_STRENGTH = 1e-8  # a zero strength (flyvis clamps at 0) starts from this in log space


def hex_neighbourhood(columns: np.ndarray, radius: int) -> np.ndarray:
    """(C, K) index of every column's neighbours within ``radius`` (hex distance), -1 outside the lattice.

    K = 3r(r+1)+1, in the same offset order for every column (a convolution kernel's taps).
    """
    offsets = [(du, dv) for du in range(-radius, radius + 1)
               for dv in range(max(-radius, -radius - du), min(radius, radius - du) + 1)]
    index = {(int(u), int(v)): i for i, (u, v) in enumerate(columns.tolist())}
    out = np.full((len(columns), len(offsets)), -1, dtype=np.int64)
    for c, (u, v) in enumerate(columns.tolist()):
        for k, (du, dv) in enumerate(offsets):
            out[c, k] = index.get((u + du, v + dv), -1)
    return out


class HexConv(nn.Module):
    """Convolution on the hex lattice: every column mixes the features of its neighbours (zero outside)."""

    def __init__(self, columns: np.ndarray, radius: int, c_in: int, c_out: int):
        super().__init__()
        nb = hex_neighbourhood(columns, radius)
        self.register_buffer("index", torch.from_numpy(np.where(nb < 0, len(columns), nb)), persistent=False)
        self.linear = nn.Linear(c_in * nb.shape[1], c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C, c_in) -> (..., C, c_out)."""
        pad = torch.zeros(*x.shape[:-2], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        taps = torch.cat([x, pad], dim=-2)[..., self.index, :]  # (..., C, K, c_in)
        return self.linear(taps.flatten(-2))


class OutputFeatures(nn.Module):
    """Voltage and output (relu of the voltage) of the decoded cell types, standardised per type.

    The decoded types default to the 34 output types (one cell per column each). Standardisation
    uses the statistics of the batch at hand (over time, sequences and columns), as flyvis's
    decoder does with batch normalisation: a network whose responses are still tiny gives the
    readout a usable signal, and no readout can exploit a type's resting level.
    """

    def __init__(self, net: FlyNetwork, cell_types: list[str] | None = None):
        super().__init__()
        if cell_types:
            types = [net.type_index(t) for t in cell_types]
        else:
            types = [i for i, r in enumerate(net.roles) if r == "output"]
        col = {(int(u), int(v)): i for i, (u, v) in enumerate(net.columns.tolist())}
        cells = np.full((net.n_columns, len(types)), -1, dtype=np.int64)
        for j, t in enumerate(types):
            for n in np.flatnonzero(net.node_type == t):
                cells[col[(int(net.u[n]), int(net.v[n]))], j] = n
        if (cells < 0).any():
            bad = net.type_names[types[int(np.flatnonzero((cells < 0).any(axis=0))[0])]]
            raise ValueError(f"cell type {bad} does not have one cell per column: it cannot feed the flow decoder")
        self.register_buffer("cells", torch.from_numpy(cells), persistent=False)
        self.n_features = 2 * len(types)

    def forward(self, voltage: torch.Tensor) -> torch.Tensor:
        """(T, N, B) voltages -> (T, B, C, 2 n_types) standardised [voltage, relu(voltage)]."""
        v = voltage.permute(0, 2, 1)[..., self.cells]
        x = torch.cat([v, torch.relu(v)], dim=-1)
        return (x - x.mean(dim=(0, 1, 2))) / (x.std(dim=(0, 1, 2)) + 1e-6)


class FlowDecoder(nn.Module):
    """Reads the motion from the decoded cell types (see :class:`OutputFeatures`).

    * ``kind="learned"``: flyvis's decoder, two hexagonal convolutions (``radius``) with an ELU
      between, trained with the network by gradient descent; predicts the flow at every column.
    * ``kind="ridge"``: a linear readout solved in closed form (ridge regression, :meth:`fit`,
      differentiable), cross-fitted on every batch by the task (fitted on half of the
      sequences, scored on the others): the best linear readout of the current network, so the
      network is trained towards linearly decodable motion from the first step on, and never
      rewarded for telling apart the few sequences it was fitted on.
      ``pooling="local"`` predicts the flow at every column from its neighbourhood (``radius``);
      ``pooling="global"`` predicts the self-motion (mean flow and rotation rate over the scored
      columns) from the features averaged over those columns, as the fly's lobula plate
      tangential cells pool T4/T5 over the eye.
    """

    def __init__(self, net: FlyNetwork, kind: str = "ridge", pooling: str = "global", hidden: int = 16,
                 radius: int = 1, dropout: float = 0.0, ridge: float = 1e-3, cell_types: list[str] | None = None):
        super().__init__()
        if kind not in ("ridge", "learned"):
            raise ValueError(f"decoder kind must be 'ridge' or 'learned', got {kind!r}")
        if pooling not in ("local", "global") or (kind == "learned" and pooling != "local"):
            raise ValueError("decoder pooling must be 'local' or 'global' ('local' for a learned decoder), got "
                             f"{pooling!r}")
        self.kind, self.pooling = kind, pooling
        self.ridge = float(ridge)
        self.features = OutputFeatures(net, cell_types)
        F = self.features.n_features
        if kind == "learned":
            self.conv1 = HexConv(net.columns, radius, F, hidden)
            self.conv2 = HexConv(net.columns, radius, hidden, 2)
            self.dropout = nn.Dropout(dropout)
            return
        if pooling == "local":
            nb = hex_neighbourhood(net.columns, radius)
            self.register_buffer("index", torch.from_numpy(np.where(nb < 0, len(net.columns), nb)), persistent=False)

    def design(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Ridge regressors: features (T, B, C, F), scored mask (T, B, C) -> rows (S, K)."""
        if self.pooling == "global":
            w = mask.to(feats.dtype)
            rows = (feats * w[..., None]).sum(dim=2) / w.sum(dim=2, keepdim=True).clamp(min=1.0)
            rows = rows[mask.any(dim=2)]
        else:
            pad = torch.zeros(*feats.shape[:-2], 1, feats.shape[-1], dtype=feats.dtype, device=feats.device)
            rows = torch.cat([feats, pad], dim=-2)[..., self.index, :].flatten(-2)[mask]
        return torch.cat([rows, torch.ones_like(rows[:, :1])], dim=-1)

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Ridge weights (K, outputs) for rows X (S, K) -> Y (S, outputs), differentiable in X."""
        A = X.T @ X + self.ridge * X.shape[0] * torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
        return torch.linalg.solve(A, X.T @ Y)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Learned decoder: features (T, B, C, F) -> flow (T, B, C, 2)."""
        if self.kind != "learned":
            raise RuntimeError("a ridge readout is applied as design(...) @ fit(...)")
        return self.conv2(nn.functional.elu(self.conv1(self.dropout(feats))))


class TrainableFlyNetwork(nn.Module):
    """The fly visual system with trainable per-type / per-pair parameters (see the module docstring)."""

    def __init__(self, net: FlyNetwork, init: FlyParameters, dt: float = 0.02):
        super().__init__()
        self.dt = float(dt)
        self.n_nodes = net.n_nodes
        # time constants and strengths are learnt in log space: scale-free steps for values
        # that span two orders of magnitude, and strengths stay >= 0 by construction
        self.log_time_const = nn.Parameter(torch.log(torch.tensor(init.time_const, dtype=torch.float32)))
        self.bias = nn.Parameter(torch.tensor(init.bias, dtype=torch.float32))
        strength = torch.tensor(init.syn_strength, dtype=torch.float32).clamp(min=MIN_STRENGTH)
        self.log_strength = nn.Parameter(torch.log(strength))
        self.register_buffer("sign", torch.tensor(init.sign, dtype=torch.float32), persistent=False)
        self.register_buffer("syn_count", torch.tensor(init.syn_count, dtype=torch.float32), persistent=False)
        self.register_buffer("node_type", torch.from_numpy(net.node_type.astype(np.int64)), persistent=False)
        self.register_buffer("edge_type", torch.from_numpy(net.edge_type.astype(np.int64)), persistent=False)
        self.register_buffer("source", torch.from_numpy(net.edge_source.astype(np.int64)), persistent=False)
        self.register_buffer("target", torch.from_numpy(net.edge_target.astype(np.int64)), persistent=False)
        self.register_buffer("input_nodes", torch.from_numpy(net.input_nodes.astype(np.int64)), persistent=False)
        self.register_buffer("input_columns", torch.from_numpy(net.input_columns.astype(np.int64)), persistent=False)

    @property
    def time_const(self) -> torch.Tensor:
        return self.log_time_const.exp()

    @property
    def syn_strength(self) -> torch.Tensor:
        return self.log_strength.exp()

    def derived(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(k (N, 1), V_rest (N, 1), edge weights (E,)) from the current parameters."""
        k = self.dt / torch.clamp(self.time_const, min=self.dt)
        w = (self.sign * self.syn_strength)[self.edge_type] * self.syn_count
        return k[self.node_type][:, None], self.bias[self.node_type][:, None], w

    def step(self, V: torch.Tensor, x: torch.Tensor, derived) -> torch.Tensor:
        """One Euler step: V (N, B), column luminance x (C, B)."""
        k, rest, w = derived
        msg = torch.relu(V).index_select(0, self.source) * w[:, None]
        drive = rest + torch.zeros_like(V).index_add(0, self.target, msg)
        drive = drive.index_add(0, self.input_nodes, x.index_select(0, self.input_columns))
        return V + k * (drive - V)

    def steady_state(self, batch: int, grey: float = 0.5, steps: int = 100) -> torch.Tensor:
        """The state after ``steps`` steps of uniform grey from V_rest (no gradient)."""
        with torch.no_grad():
            d = self.derived()
            V = d[1].expand(-1, batch).clone()
            x = torch.full((int(self.input_columns.max()) + 1, batch), float(grey), device=V.device)
            for _ in range(steps):
                V = self.step(V, x, d)
        return V

    def forward(self, stimulus: torch.Tensor, V0: torch.Tensor) -> torch.Tensor:
        """Stimulus (T, C, B) from state V0 (N, B) -> voltages (T, N, B); frame t is the state before stimulus t."""
        d = self.derived()
        out = []
        V = V0
        for t in range(stimulus.shape[0]):
            out.append(V)
            V = self.step(V, stimulus[t], d)
        return torch.stack(out)

    def parameters_for(self, init: FlyParameters) -> FlyParameters:
        """The current values as :class:`FlyParameters` (synapse counts and signs from ``init``)."""
        return FlyParameters(
            time_const=self.time_const.detach().cpu().numpy().astype(np.float32),
            bias=self.bias.detach().cpu().numpy().astype(np.float32),
            sign=init.sign.copy(),
            syn_strength=self.syn_strength.detach().cpu().numpy().astype(np.float32),
            syn_count=init.syn_count.copy(),
        )
