"""flyvis's task-trained networks (``flyvis download-pretrained``) as fly-simulator parameters.

A flyvis model directory (e.g. ``.../flow/0000/000``) holds ``_meta.yaml`` (the network
config) and ``best_chkpt`` (a torch file whose ``"network"`` entry holds the trained
parameter groups)::

    nodes_bias          (65,)    per cell type (resting potential)
    nodes_time_const    (65,)    per cell type
    edges_sign          (604,)   per (source type, target type) pair
    edges_syn_strength  (604,)   per pair
    edges_syn_count     (2355,)  log of the synapse count per (pair, du, dv) offset

flyvis orders each group by first appearance in its compiled extent-15 node and edge
tables (pandas ``groupby(sort=False)``). Cell types and pairs appear in connectome-file
order, but a pair without a single edge at extent 15 (``Lawf1->Lawf1``: the strided Lawf1
lattice never lands on its own offsets) has no group: the 605 pairs of the file make 604
groups. The mapping is therefore computed from our own extent-15 network, the same at any
simulated extent (a pair with no edges at a small extent still maps to its group), and
checked: every sign and every synapse count of the checkpoint must equal our connectome's,
or loading fails naming the first mismatch.

The file is read with ``torch.load(weights_only=True)`` (no code from the file runs).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from neurocast.errors import DataError
from neurocast.sim.fly_network import FlyNetwork, build_network
from neurocast.sim.fly_params import FlyParameters

CHECKPOINT = "best_chkpt"
META = "_meta.yaml"
FLYVIS_EXTENT = 15
GROUPS = {"nodes_bias": "types", "nodes_time_const": "types", "edges_sign": "pairs",
          "edges_syn_strength": "pairs", "edges_syn_count": "offsets"}


def resolve_model_dir(path: str | Path, member: int | None = None) -> Path:
    """The model directory: ``path`` itself, or member ``member`` of an ensemble directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"flyvis network {p} does not exist (download with `flyvis download-pretrained`)")
    if member is not None:
        if member < 0:
            raise DataError(f"flyvis ensemble member must be >= 0, got {member}")
        if (p / CHECKPOINT).is_file():
            raise DataError(f"{p} is a single flyvis model, not an ensemble: drop the member index ({member})")
        cand = p / f"{int(member):03d}"
        if not cand.is_dir():
            have = sorted(d.name for d in p.iterdir() if d.is_dir() and (d / CHECKPOINT).is_file())
            span = f"{have[0]}..{have[-1]} ({len(have)} members)" if have else "no members"
            raise DataError(f"flyvis ensemble {p} has no member {int(member):03d} (it holds {span})")
        p = cand
    if not (p / CHECKPOINT).is_file():
        ensemble = any((d / CHECKPOINT).is_file() for d in p.iterdir() if d.is_dir())
        hint = " (an ensemble directory: give a member index)" if ensemble else ""
        raise DataError(f"{p} is not a flyvis model directory: it has no {CHECKPOINT}{hint}")
    return p


@lru_cache(maxsize=4)
def _flyvis_groups(connectome_file: str | None,
                   n_syn_fill: float) -> tuple[np.ndarray, dict[tuple[int, int, int], int], np.ndarray]:
    """(pair index of every flyvis pair group, (pair, du, dv) -> offset group, counts of the offset groups)."""
    big = build_network(FLYVIS_EXTENT, connectome_file, n_syn_fill)
    n_pairs = len(big.edge_type_keys)
    pairs = np.flatnonzero(np.bincount(big.edge_type, minlength=n_pairs) > 0)
    key = np.stack([big.edge_type, big.edge_du, big.edge_dv], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    first = np.sort(first)  # first appearance in the compiled edge table
    offsets = {tuple(int(x) for x in key[i]): g for g, i in enumerate(first)}
    return pairs, offsets, big.n_syn[first].astype(np.float64)


def _read_meta(model: Path) -> None:
    import yaml

    meta_path = model / META
    if not meta_path.is_file():
        return  # a bare checkpoint copy is accepted; its groups are still checked below
    try:
        meta = yaml.safe_load(meta_path.read_text()) or {}
        net_cfg = meta["config"]["network"]
    except Exception:
        raise DataError(f"{meta_path} is not a flyvis network config (no config.network)") from None
    dyn = (net_cfg.get("dynamics") or {}).get("type")
    if dyn not in (None, "PPNeuronIGRSynapses"):
        raise DataError(f"{meta_path}: dynamics {dyn!r} is not supported (only PPNeuronIGRSynapses, flyvis's default)")
    extent = (net_cfg.get("connectome") or {}).get("extent")
    if extent not in (None, FLYVIS_EXTENT):
        raise DataError(f"{meta_path}: network trained at extent {extent}; only flyvis's extent-{FLYVIS_EXTENT} tables "
                        "are mapped")


def read_checkpoint(model: Path) -> dict[str, np.ndarray]:
    """The five parameter groups of a flyvis checkpoint as float64 arrays (shapes checked later)."""
    import pickle
    import zipfile

    import torch

    path = model / CHECKPOINT
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} is not a readable torch checkpoint (truncated or not a flyvis file): "
                        f"{first}") from None
    if not isinstance(state, dict) or not isinstance(state.get("network"), dict):
        raise DataError(f"{path} is not a flyvis checkpoint: it has no 'network' parameter dictionary")
    net = state["network"]
    out = {}
    for name in GROUPS:
        if name not in net:
            raise DataError(f"{path}: the network entry has no {name!r} (keys: {', '.join(sorted(map(str, net)))})")
        value = net[name]
        if not isinstance(value, torch.Tensor) or value.ndim != 1:
            raise DataError(f"{path}: {name} must be a 1-d tensor, got {getattr(value, 'shape', type(value).__name__)}")
        arr = value.detach().double().numpy()
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: {name} holds non-finite values")
        out[name] = arr
    return out


def load_flyvis_parameters(path: str | Path, net: FlyNetwork, member: int | None = None) -> FlyParameters:
    """Trained parameters of a flyvis model (or ensemble ``member``) for our network ``net``."""
    model = resolve_model_dir(path, member)
    _read_meta(model)
    groups = read_checkpoint(model)
    src = model / CHECKPOINT
    pairs, offsets, counts = _flyvis_groups(connectome_for(net), 1.0)
    n_types = len(net.type_names)
    expected = {"types": n_types, "pairs": len(pairs), "offsets": len(counts)}
    for name, kind in GROUPS.items():
        if groups[name].shape[0] != expected[kind]:
            raise DataError(
                f"{src}: {name} has {groups[name].shape[0]} values, our connectome has {expected[kind]} "
                f"{'cell types' if kind == 'types' else 'type pairs' if kind == 'pairs' else '(pair, offset) groups'} "
                "(a different connectome version?)"
            )
    sign_ours = net.edge_type_sign[pairs].astype(np.float64)
    bad = np.flatnonzero(groups["edges_sign"] != sign_ours)
    if bad.size:
        k = pairs[bad[0]]
        raise DataError(f"{src}: sign of {'->'.join(net.edge_type_keys[k])} is {groups['edges_sign'][bad[0]]:+g}, "
                        f"our connectome says {sign_ours[bad[0]]:+g}")
    syn = np.exp(groups["edges_syn_count"])
    rel = np.abs(syn - counts) / counts
    bad = np.flatnonzero(rel > 1e-4)
    if bad.size:
        g = int(bad[0])
        (pair, du, dv) = next(k for k, v in offsets.items() if v == g)
        raise DataError(f"{src}: synapse count of {'->'.join(net.edge_type_keys[pair])} at offset ({du},{dv}) is "
                        f"{syn[g]:.4g}, our connectome says {counts[g]:.4g}")
    if (groups["nodes_time_const"] <= 0).any():
        raise DataError(f"{src}: nodes_time_const holds non-positive values")
    strength = np.zeros(len(net.edge_type_keys))
    strength[pairs] = groups["edges_syn_strength"]
    sign = net.edge_type_sign.astype(np.float64).copy()
    sign[pairs] = groups["edges_sign"]
    try:
        edge_group = np.fromiter(
            (offsets[(int(k), int(du), int(dv))] for k, du, dv in zip(net.edge_type, net.edge_du, net.edge_dv)),
            dtype=np.int64, count=net.n_edges,
        )
    except KeyError as exc:
        k, du, dv = exc.args[0]
        raise DataError(f"{src}: our network has {'->'.join(net.edge_type_keys[k])} edges at offset ({du},{dv}), "
                        "which flyvis's extent-15 network does not have") from None
    # flyvis exponentiates the stored log count in float32
    syn_count = np.exp(groups["edges_syn_count"].astype(np.float32))[edge_group]
    return FlyParameters(
        time_const=groups["nodes_time_const"].astype(np.float32),
        bias=groups["nodes_bias"].astype(np.float32),
        sign=sign.astype(np.float32),
        syn_strength=np.maximum(strength, 0.0).astype(np.float32),
        syn_count=syn_count.astype(np.float32),
    )


def connectome_for(net: FlyNetwork) -> str | None:
    """The connectome file argument that built ``net`` (None for the flyvis wheel's)."""
    from neurocast.sim.fly_network import connectome_path

    return None if Path(net.source_file) == connectome_path(None) else net.source_file
