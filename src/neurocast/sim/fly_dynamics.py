"""Dynamics of the fly visual system model (no files: arrays in, arrays out).

Voltage, explicit Euler at ``dt`` (the time constant is floored at ``dt`` for stability,
as in flyvis)::

    V <- V + dt / max(tau, dt) * (-V + V_rest + W relu(V) + x(t))  (+ N(0, sigma^2) noise)

with the stimulus ``x`` only on photoreceptors (R1-R8 of a column all receive that
column's luminance). Calcium and fluorescence::

    c <- c + dt / tau_c * (-c + softplus(V)),     F = gain * c + offset

Recording convention (as in the anchor): frame t holds V(t), c(t), F(t) and the stimulus
x(t) that drives the update to t+1, so x(t+1) = Phi(x(t), stim(t)).

The state is kept as (N, B): B stimulus sequences advance together and the synaptic
input of all of them is one sparse (CSR, int32 indices) matrix product per step.

On CPU the Euler update is folded into that product: with k = dt / max(tau, dt),

    V' = (1 - k) V + sum_j (k_i w_ij) relu(V_j) + k_i x_c(i) + k_i V_rest_i,

one weighted gather-sum per cell over the table [relu(V); x; 1] (filled in place), read once
per step for all B sequences (``torch.nn.functional.embedding_bag``, whose x86 kernel runs the
batched product twice as fast as the CSR matrix product), then one multiply-add.
:meth:`FlySimulator.reference_step` is the equation as written (relu, product, stimulus,
``torch.lerp``); the two agree within float32 rounding (tests/test_fly_sim.py) and GPUs use it.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from neurocast.devices import select_device
from neurocast.errors import DataError
from neurocast.sim.fly_network import FlyNetwork
from neurocast.sim.fly_params import FlyParameters

CHANNELS = ("voltage", "calcium", "fluorescence")
SMALL_WORK = 200_000  # synapse-sequence products per step below which one CPU thread is fastest


@contextmanager
def threads_for(work: int, device: torch.device):
    """One CPU thread for small problems: a step of a few thousand cells is over in microseconds,
    and several threads only add synchronisation (ruinous when other processes share the cores)."""
    if device.type != "cpu" or work >= SMALL_WORK or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class FlyState:
    voltage: torch.Tensor               # (N, B)
    calcium: torch.Tensor | None        # (N, B); None when calcium is not simulated

    @property
    def batch(self) -> int:
        return int(self.voltage.shape[1])


class FlySimulator:
    def __init__(
        self,
        net: FlyNetwork,
        params: FlyParameters,
        *,
        dt: float = 0.02,
        noise_std: float = 0.0,
        tau_calcium: float = 0.5,
        fluorescence_gain: float = 1.0,
        fluorescence_offset: float = 0.0,
        device: str | torch.device | None = "cpu",
    ):
        if not dt > 0:
            raise DataError(f"dt must be > 0 seconds, got {dt}")
        if noise_std < 0:
            raise DataError(f"noise_std must be >= 0, got {noise_std}")
        if not tau_calcium > 0:
            raise DataError(f"tau_calcium must be > 0 seconds, got {tau_calcium}")
        self.net = net
        self.dt = float(dt)
        self.noise_std = float(noise_std)
        self.tau_calcium = float(tau_calcium)
        self.gain = float(fluorescence_gain)
        self.offset = float(fluorescence_offset)
        self.device = device if isinstance(device, torch.device) else select_device(device)
        N = net.n_nodes
        weights = params.edge_weights(net)
        order = np.lexsort((net.edge_source, net.edge_target))  # CSR rows = postsynaptic cells
        indptr = np.zeros(N + 1, dtype=np.int64)
        np.cumsum(np.bincount(net.edge_target, minlength=N), out=indptr[1:])
        idx_dtype = torch.int32 if net.n_edges < 2**31 else torch.int64
        with torch.sparse.check_sparse_tensor_invariants(False):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self.W = torch.sparse_csr_tensor(
                    torch.from_numpy(indptr).to(idx_dtype),
                    torch.from_numpy(net.edge_source[order]).to(idx_dtype),
                    torch.from_numpy(weights[order]),
                    size=(N, N),
                    device=self.device,
                )
        tau = params.node_time_const(net)
        k = (self.dt / np.maximum(tau, self.dt)).astype(np.float32)
        self.k = torch.from_numpy(k).to(self.device)[:, None]
        self.bias = torch.from_numpy(params.node_bias(net)).to(self.device)[:, None]
        self._full: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._tables: dict[int, torch.Tensor] = {}
        self.input_nodes = torch.from_numpy(net.input_nodes).to(self.device)
        self.input_columns = torch.from_numpy(net.input_columns).to(self.device)
        self.c_rate = self.dt / self.tau_calcium
        #: the CPU step (Euler update folded into one weighted gather-sum); False: reference_step
        self.folded = self.device.type == "cpu"
        if self.folded:
            self._build_folded(net, order, weights, k, params.node_bias(net))
            self._one_minus_k = 1 - self.k

    def _build_folded(self, net: FlyNetwork, order: np.ndarray, weights: np.ndarray, k: np.ndarray,
                      rest: np.ndarray) -> None:
        """Cell i's row of the folded step over the table [relu(V); x; 1] (N + C + 1 rows): its
        synapses with weights k_i w_ij, its stimulus column with weight k_i, and the constant
        with weight k_i V_rest_i; as bag arrays (index, offsets, weights) and as a CSR matrix."""
        N, C = net.n_nodes, net.n_columns
        rows = np.concatenate([net.edge_target[order], net.input_nodes, np.arange(N)])
        cols = np.concatenate([net.edge_source[order], N + net.input_columns, np.full(N, N + C)])
        vals = np.concatenate([k[net.edge_target[order]] * weights[order], k[net.input_nodes], k * rest])
        o = np.argsort(rows, kind="stable")  # by cell; within a cell: synapses, stimulus, constant
        ptr = np.zeros(N + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=N), out=ptr[1:])
        dtype = torch.int32 if len(o) < 2**31 else torch.int64
        self._bag_index = torch.from_numpy(cols[o]).to(dtype)
        self._bag_offsets = torch.from_numpy(ptr[:-1]).to(dtype)
        self._bag_weights = torch.from_numpy(vals[o].astype(np.float32))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self._folded_matrix = torch.sparse_csr_tensor(torch.from_numpy(ptr).to(dtype), self._bag_index,
                                                          self._bag_weights, size=(N, N + C + 1))

    @property
    def n_neurons(self) -> int:
        return self.net.n_nodes

    @property
    def n_columns(self) -> int:
        return self.net.n_columns

    # ------------------------------------------------------------------ dynamics
    def _expanded(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k and V_rest as contiguous (N, B) for the reference step, made once per batch size
        (``lerp`` and ``addmm`` are ~3x slower broadcasting)."""
        if batch not in self._full:
            self._full[batch] = (self.k.expand(-1, batch).contiguous(), self.bias.expand(-1, batch).contiguous())
        return self._full[batch]

    def _table(self, batch: int) -> torch.Tensor:
        """The folded step's table [relu(V); x; 1] (N + C + 1, B), made once per batch size."""
        if batch not in self._tables:
            self._tables[batch] = torch.empty(self.n_neurons + self.n_columns + 1, batch)
            self._tables[batch][-1] = 1.0
        return self._tables[batch]

    def reference_step(self, V: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The voltage update as written, V + k (V_rest + W relu(V) + x - V), in torch calls (any device)."""
        k, bias = self._expanded(V.shape[1])
        r = torch.relu(V)
        if V.shape[1] == 1:  # matrix-vector product: ~2x faster than a one-column product
            target = torch.mv(self.W, r[:, 0])[:, None].add_(bias)
        else:
            target = torch.addmm(bias, self.W, r)
        target.index_add_(0, self.input_nodes, x.index_select(0, self.input_columns))
        return torch.lerp(V, target, k, out=out) if out is not None else torch.lerp(V, target, k)

    def _folded_step(self, V: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """V' = (1 - k) V + [k_i w_ij | k_i | k_i V_rest_i] . [relu(V); x; 1]: the table is filled in
        place, the product is one weighted gather-sum per cell (``embedding_bag``: FBGEMM's kernel on
        x86, twice as fast as the CSR product for a batch; one sequence: a matrix-vector product)."""
        N, B = V.shape
        table = self._table(B)
        torch.clamp_min(V, 0.0, out=table[:N])
        table[N:-1].copy_(x)
        if B == 1:
            prod = torch.mv(self._folded_matrix, table[:, 0])[:, None]
        else:
            prod = F.embedding_bag(self._bag_index, table, self._bag_offsets, mode="sum",
                                   per_sample_weights=self._bag_weights)
        out = torch.empty_like(V) if out is None else out
        return torch.addcmul(prod, V, self._one_minus_k, out=out)  # (N, 1) broadcast: as fast here

    def step(
        self,
        state: FlyState,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        out: torch.Tensor | None = None,
    ) -> FlyState:
        """One Euler step with column luminance ``x`` (C, B); the new voltage goes to ``out`` if given."""
        V = state.voltage
        V_new = self._folded_step(V, x, out) if self.folded else self.reference_step(V, x, out)
        if self.noise_std > 0:
            V_new.add_(torch.randn(V_new.shape, generator=generator, device=V_new.device), alpha=self.noise_std)
        Ca = state.calcium
        if Ca is not None:
            Ca = torch.nn.functional.softplus(V).sub_(Ca).mul_(self.c_rate).add_(Ca)
        return FlyState(V_new, Ca)

    def initial_state(
        self, batch: int = 1, warmup_s: float = 2.0, grey: float = 0.5, calcium: bool = True
    ) -> FlyState:
        """Steady state under uniform grey input: start at V_rest, integrate ``warmup_s`` seconds (no noise).

        Calcium starts at softplus(V_rest) and relaxes during the warm-up too, so both
        channels start near their grey steady state (no start-up transient).
        """
        if batch < 1:
            raise DataError(f"batch must be >= 1, got {batch}")
        # the grey steady state is the same for every sequence: integrate one, then copy it
        V = self.bias.clone()
        state = FlyState(V, torch.nn.functional.softplus(V) if calcium else None)
        x = torch.full((self.n_columns, 1), float(grey), device=self.device)
        noise, self.noise_std = self.noise_std, 0.0
        try:
            with torch.no_grad(), threads_for(self.net.n_edges, self.device):
                for _ in range(int(round(warmup_s / self.dt))):
                    state = self.step(state, x)
        finally:
            self.noise_std = noise
        return FlyState(state.voltage.expand(-1, batch).contiguous(),
                        None if state.calcium is None else state.calcium.expand(-1, batch).contiguous())

    def run(
        self,
        state: FlyState,
        stimulus: torch.Tensor,
        generator: torch.Generator | None = None,
        channels: tuple[str, ...] = CHANNELS,
    ) -> tuple[dict[str, torch.Tensor], FlyState]:
        """Integrate over a stimulus block (T, C, B); returns {channel: (T, N, B)} and the next state.

        Frame t of every channel is the state *before* the update driven by stimulus[t].
        (T, N, B) keeps every per-step copy contiguous; sequence b is ``out[c][:, :, b]``.
        """
        T, C, B = stimulus.shape
        if C != self.n_columns or B != state.batch:
            raise DataError(f"stimulus block must be (T, {self.n_columns}, {state.batch}), got {tuple(stimulus.shape)}")
        unknown = set(channels) - set(CHANNELS)
        if unknown:
            raise DataError(f"unknown channel {sorted(unknown)[0]!r}; channels are {', '.join(CHANNELS)}")
        if state.calcium is None and ({"calcium", "fluorescence"} & set(channels)):
            raise DataError("calcium/fluorescence asked for but the state was created with calcium=False")
        N = self.n_neurons
        out = {c: torch.empty((T, N, B), device=self.device) for c in channels}
        stimulus = stimulus.to(self.device, torch.float32)
        volt = out.get("voltage")
        with torch.no_grad(), threads_for(self.net.n_edges * B, self.device):
            if volt is not None:
                volt[0].copy_(state.voltage)
            for t in range(T):
                if "calcium" in out:
                    out["calcium"][t].copy_(state.calcium)
                if "fluorescence" in out:
                    torch.add(state.calcium * self.gain, self.offset, out=out["fluorescence"][t])
                # the new voltage is written straight into the next output frame
                target = volt[t + 1] if volt is not None and t + 1 < T else None
                state = self.step(state, stimulus[t], generator, out=target)
        return out, state
