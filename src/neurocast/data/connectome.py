"""Sparse synaptic connectivity attached to a recording.

Stored in compressed-sparse-row form *by postsynaptic neuron*: for neuron ``i`` its
presynaptic neurons are ``indices[indptr[i]:indptr[i + 1]]`` with the matching
``weights``. This is the layout both consumers need: the simulator multiplies it with the
presynaptic rates (row i sums the input to i) and the latent trainer's connectome
augmentation asks "which neurons can influence neuron i".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurocast.errors import DataError


@dataclass(frozen=True, eq=False)
class Connectome:
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    n_neurons: int

    def __post_init__(self) -> None:
        indptr = np.asarray(self.indptr)
        indices = np.asarray(self.indices)
        weights = np.asarray(self.weights)
        n = int(self.n_neurons)
        if n < 1:
            raise DataError(f"connectome: n_neurons must be >= 1, got {n}")
        if indptr.ndim != 1 or indptr.shape[0] != n + 1:
            raise DataError(
                f"connectome: indptr must have n_neurons + 1 = {n + 1} entries, got shape {indptr.shape}"
            )
        if indices.ndim != 1 or weights.ndim != 1 or indices.shape != weights.shape:
            raise DataError(
                f"connectome: indices and weights must be 1-D of equal length, got {indices.shape} and {weights.shape}"
            )
        if not np.issubdtype(indptr.dtype, np.integer) or not np.issubdtype(indices.dtype, np.integer):
            raise DataError("connectome: indptr and indices must be integer arrays")
        if indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
            raise DataError(
                "connectome: indptr must start at 0, never decrease and end at the number of edges "
                f"({indices.shape[0]})"
            )
        if indices.size:
            bad = np.flatnonzero((indices < 0) | (indices >= n))
            if bad.size:
                e = int(bad[0])
                post = int(np.searchsorted(indptr, e, side="right") - 1)
                raise DataError(
                    f"connectome: presynaptic index {int(indices[e])} out of range [0, {n}) "
                    f"(edge {e}, postsynaptic neuron {post}; {bad.size} such edges)"
                )
        if not np.all(np.isfinite(weights)):
            e = int(np.flatnonzero(~np.isfinite(weights))[0])
            raise DataError(f"connectome: weight of edge {e} is {weights[e]} (must be finite)")
        object.__setattr__(self, "indptr", indptr.astype(np.int64, copy=False))
        object.__setattr__(self, "indices", indices.astype(np.int64, copy=False))
        object.__setattr__(self, "weights", weights.astype(np.float32, copy=False))
        object.__setattr__(self, "n_neurons", n)

    @classmethod
    def from_edges(cls, pre, post, weights, n_neurons: int) -> "Connectome":
        """Build from edge lists (presynaptic index, postsynaptic index, weight)."""
        pre = np.asarray(pre, dtype=np.int64).ravel()
        post = np.asarray(post, dtype=np.int64).ravel()
        weights = np.asarray(weights, dtype=np.float32).ravel()
        if not (pre.shape == post.shape == weights.shape):
            raise DataError(
                f"connectome: pre, post and weights must have equal length, got {pre.shape[0]}, {post.shape[0]}, "
                f"{weights.shape[0]}"
            )
        for name, idx in (("pre", pre), ("post", post)):
            bad = np.flatnonzero((idx < 0) | (idx >= n_neurons))
            if bad.size:
                raise DataError(
                    f"connectome: {name} index {int(idx[bad[0]])} of edge {int(bad[0])} out of range [0, {n_neurons})"
                )
        order = np.lexsort((pre, post))
        counts = np.bincount(post, minlength=n_neurons)
        indptr = np.zeros(n_neurons + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, pre[order], weights[order], n_neurons)

    @property
    def n_edges(self) -> int:
        return int(self.indices.shape[0])

    def presynaptic(self, i: int) -> np.ndarray:
        """Indices of the neurons that synapse onto neuron ``i``."""
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def presynaptic_union(self, neurons) -> np.ndarray:
        """Sorted unique indices of every neuron presynaptic to any of ``neurons``."""
        neurons = np.asarray(neurons, dtype=np.int64).ravel()
        if neurons.size == 0:
            return np.zeros(0, dtype=np.int64)
        starts, ends = self.indptr[neurons], self.indptr[neurons + 1]
        lengths = ends - starts
        if lengths.sum() == 0:
            return np.zeros(0, dtype=np.int64)
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return np.unique(self.indices[np.arange(lengths.sum()) + offsets])

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pre, post, weight) arrays, one entry per edge, ordered by postsynaptic neuron."""
        post = np.repeat(np.arange(self.n_neurons, dtype=np.int64), np.diff(self.indptr))
        return self.indices.copy(), post, self.weights.copy()

    def to_torch(self, device=None, dtype=None):
        """Sparse CSR tensor W (N x N) with W[post, pre] = weight, so that W @ r sums each neuron's input."""
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                torch.from_numpy(self.indptr),
                torch.from_numpy(self.indices),
                torch.from_numpy(self.weights).to(dtype or torch.float32),
                size=(self.n_neurons, self.n_neurons),
                device=device,
                check_invariants=False,  # validated in __post_init__
            )

    def __repr__(self) -> str:
        return f"Connectome(n_neurons={self.n_neurons}, n_edges={self.n_edges})"
