"""Parameters of the fly visual system model.

Shared exactly as in flyvis: per cell type a time constant and a resting potential; per
edge type (source type, target type) a sign and a synaptic strength; per edge a synapse
count (shared across cells with the same type pair and column offset). The weight of an
edge is ``sign x syn_count x syn_strength``.

Default initialisation is flyvis's (its untrained network): time constant 0.05 s,
resting potential ~ Normal(0.5, 0.05) per type drawn with ``torch.Generator`` seeded by
``seed`` (seed 0 gives flyvis's values), strength 0.01 / mean synapse count of the edge
type, sign from the connectome.

A parameter file (JSON or YAML) can replace any subset, e.g. trained values::

    nodes:  {T4a: {time_const: 0.03, bias: 0.41}, ...}
    edges:  {"Mi1->T4a": {sign: 1, syn_strength: 0.002}, ...}
    syn_count: {"Mi1->T4a@0,0": 37.0, ...}           # key: "SRC->TAR@du,dv"

:func:`parameters_to_dict` writes that format (every value), so a simulation's own
parameters can be saved, edited and loaded again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.errors import DataError
from neurocast.sim.fly_network import FlyNetwork

FORMAT = "neurocast-fly-parameters"


@dataclass(eq=False)
class FlyParameters:
    time_const: np.ndarray      # (n_types,) seconds
    bias: np.ndarray            # (n_types,) resting potential
    sign: np.ndarray            # (n_edge_types,)
    syn_strength: np.ndarray    # (n_edge_types,)
    syn_count: np.ndarray       # (E,)

    def node_time_const(self, net: FlyNetwork) -> np.ndarray:
        return self.time_const[net.node_type].astype(np.float32)

    def node_bias(self, net: FlyNetwork) -> np.ndarray:
        return self.bias[net.node_type].astype(np.float32)

    def edge_weights(self, net: FlyNetwork) -> np.ndarray:
        """(E,) float32 weights, edge order of the network."""
        return (self.sign[net.edge_type] * self.syn_count * self.syn_strength[net.edge_type]).astype(np.float32)


def default_parameters(net: FlyNetwork, seed: int = 0, bias_mean: float = 0.5, bias_std: float = 0.05,
                       time_const: float = 0.05, strength_scale: float = 0.01) -> FlyParameters:
    """flyvis's initialisation (see the module docstring)."""
    import torch

    n_types = len(net.type_names)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    bias = torch.normal(
        torch.full((n_types,), float(bias_mean)), torch.full((n_types,), float(bias_std)), generator=gen
    ).numpy()
    n_et = len(net.edge_type_keys)
    sums = np.bincount(net.edge_type, weights=net.n_syn.astype(np.float64), minlength=n_et)
    counts = np.bincount(net.edge_type, minlength=n_et)
    mean_syn = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)
    # flyvis stores the count as a log-normal "mean" parameter: log taken in float64,
    # stored as float32, exponentiated in float32 (reproduced bit for bit)
    syn_count = torch.from_numpy(np.log(net.n_syn.astype(np.float64)).astype(np.float32)).exp().numpy()
    return FlyParameters(
        time_const=np.full(n_types, time_const, dtype=np.float32),
        bias=bias.astype(np.float32),
        sign=net.edge_type_sign.astype(np.float32).copy(),
        syn_strength=(strength_scale / mean_syn).astype(np.float32),
        syn_count=syn_count.astype(np.float32),
    )


def excitatory_spectral_radius(net: FlyNetwork, p: FlyParameters) -> float:
    """Spectral radius of the excitatory part of the weight matrix (max(W, 0)).

    Below 1 it guarantees bounded activity whatever the inhibition: with r = relu(V),
    V <= V_rest + x + W+ r, so the excitatory loop alone cannot grow without bound.
    """
    import scipy.sparse as sps
    import scipy.sparse.linalg as spla

    w = np.maximum(p.edge_weights(net).astype(np.float64), 0.0)
    if not w.any():
        return 0.0
    W = sps.csr_matrix((w, (net.edge_target, net.edge_source)), shape=(net.n_nodes, net.n_nodes))
    v0 = np.ones(net.n_nodes)
    vals = spla.eigs(W, k=1, which="LM", v0=v0, return_eigenvectors=False, maxiter=10_000, tol=1e-8)
    return float(np.abs(vals[0]))


def scale_gains(
    net: FlyNetwork, p: FlyParameters, excitatory_gain: float | None, inhibitory_factor: float = 1.0
) -> FlyParameters:
    """Rescale synaptic strengths: excitatory spectral radius -> ``excitatory_gain``
    (all strengths scaled by one factor), then inhibitory strengths x ``inhibitory_factor``.

    flyvis's initialisation (0.01 / mean synapse count) leaves most cells of the untrained
    network nearly silent (median response std ~2e-4 with natural stimuli); a gain near
    (below) 1 gives a responsive network that provably stays bounded.
    """
    strength = p.syn_strength.astype(np.float64).copy()
    if excitatory_gain is not None:
        rho = excitatory_spectral_radius(net, p)
        if rho > 0:
            strength *= excitatory_gain / rho
    strength = np.where(p.sign < 0, strength * inhibitory_factor, strength)
    return FlyParameters(p.time_const.copy(), p.bias.copy(), p.sign.copy(), strength.astype(np.float32),
                         p.syn_count.copy())


def _edge_key(src: str, tar: str) -> str:
    return f"{src}->{tar}"


def parameters_to_dict(
    net: FlyNetwork, p: FlyParameters, *, syn_count: bool = True, provenance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The parameter-file format; ``syn_count=False`` leaves the connectome's counts implicit
    (an extent-independent file: per-type and per-pair values only)."""
    syn: dict[str, float] = {}
    if syn_count:
        for k, du, dv, n in zip(net.edge_type.tolist(), net.edge_du.tolist(), net.edge_dv.tolist(),
                                p.syn_count.tolist()):
            syn.setdefault(f"{_edge_key(*net.edge_type_keys[k])}@{du},{dv}", float(n))
    out: dict[str, Any] = {"format": FORMAT}
    if provenance:
        out["provenance"] = provenance
    out.update({
        "extent": net.extent,
        "nodes": {
            name: {"time_const": float(p.time_const[i]), "bias": float(p.bias[i])}
            for i, name in enumerate(net.type_names)
        },
        "edges": {
            _edge_key(*key): {"sign": float(p.sign[i]), "syn_strength": float(p.syn_strength[i])}
            for i, key in enumerate(net.edge_type_keys)
        },
    })
    if syn_count:
        out["syn_count"] = syn
    return out


def load_parameters(path: str | Path, net: FlyNetwork, base: FlyParameters) -> FlyParameters:
    """``base`` with every value the file gives replaced (unknown names are errors)."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"parameter file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML
    except Exception as exc:
        raise DataError(f"parameter file {path} is not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"parameter file {path}: expected a mapping with nodes/edges/syn_count")
    unknown = set(data) - {"format", "extent", "nodes", "edges", "syn_count", "provenance"}
    if unknown:
        raise DataError(f"parameter file {path}: unknown section {sorted(unknown)[0]!r} (use nodes, edges, syn_count)")
    p = FlyParameters(
        base.time_const.copy(), base.bias.copy(), base.sign.copy(), base.syn_strength.copy(), base.syn_count.copy()
    )
    types = {n: i for i, n in enumerate(net.type_names)}
    for name, values in (data.get("nodes") or {}).items():
        if name not in types:
            raise DataError(f"parameter file {path}: unknown cell type {name!r} in nodes")
        for field, value in (values or {}).items():
            if field not in ("time_const", "bias"):
                raise DataError(f"parameter file {path}: nodes.{name}.{field} is not a node parameter (time_const, "
                                "bias)")
            _checked(path, f"nodes.{name}.{field}", value, positive=field == "time_const")
            getattr(p, field)[types[name]] = float(value)
    edge_types = {_edge_key(*k): i for i, k in enumerate(net.edge_type_keys)}
    for name, values in (data.get("edges") or {}).items():
        if name not in edge_types:
            raise DataError(f"parameter file {path}: unknown edge type {name!r} in edges (write 'SRC->TAR')")
        for field, value in (values or {}).items():
            if field not in ("sign", "syn_strength"):
                raise DataError(f"parameter file {path}: edges.{name}.{field} is not an edge parameter (sign, "
                                "syn_strength)")
            _checked(path, f"edges.{name}.{field}", value)
            getattr(p, field)[edge_types[name]] = float(value)
    syn = data.get("syn_count") or {}
    if syn:
        keys = np.array(
            [f"{_edge_key(*net.edge_type_keys[k])}@{du},{dv}"
             for k, du, dv in zip(net.edge_type.tolist(), net.edge_du.tolist(), net.edge_dv.tolist())],
            dtype=object,
        )
        known = set(keys.tolist())
        for key, value in syn.items():
            if key not in known:
                raise DataError(f"parameter file {path}: syn_count key {key!r} matches no edge "
                                "(write 'SRC->TAR@du,dv')")
            _checked(path, f"syn_count.{key}", value, positive=True)
            p.syn_count[keys == key] = float(value)
    return p


def _checked(path: Path, where: str, value: Any, positive: bool = False) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DataError(f"parameter file {path}: {where} must be a number, got {value!r}") from None
    if not np.isfinite(v) or (positive and v <= 0):
        raise DataError(f"parameter file {path}: {where} must be {'positive and ' if positive else ''}finite, got {v}")


def save_parameters(path: str | Path, net: FlyNetwork, p: FlyParameters, **kwargs: Any) -> None:
    """Write ``p`` as a parameter file (keyword arguments as :func:`parameters_to_dict`), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(parameters_to_dict(net, p, **kwargs), indent=1))
    tmp.replace(path)


def file_provenance(path: str | Path) -> dict[str, Any]:
    """The ``provenance`` section of a parameter file ({} when it has none)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except Exception:
        return {}
    return dict(data.get("provenance") or {}) if isinstance(data, dict) else {}
