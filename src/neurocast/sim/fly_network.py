"""The fly visual system network, built from the connectome file the ``flyvis`` wheel ships.

The connectome file (``flyvis/connectome/fib25-fib19_v2.2.json``, MIT licence) lists 65
cell types with a placement pattern on the hexagonal column lattice, and for every
presynaptic -> postsynaptic type pair the column offsets (du, dv) at which synapses
were found, with their counts. The network for a lattice of radius ``extent`` is:

* **nodes**: for every type (in file order) one cell per column (u, v) with
  u in [-n, n], v in [max(-n, -n-u), min(n, n-u)], kept where u and v are multiples of the
  type's strides (two Lawf types use strides (3, 2)); 3n(n+1)+1 columns in all;
* **edges**: for every type pair (in file order) and every offset, an edge from each
  source cell to the target cell at (u + du, v + dv) where that cell exists. Offsets
  missing inside the convex hull of the reported offsets (pairs with >= 3 offsets) are
  filled with ``n_syn_fill`` synapses, the rule flyvis uses (hull of the offsets, grid
  points inside the hull polygon).

The counts reproduce flyvis exactly: extent 4 -> 3,865 cells / 110,794 edges, extent 8 ->
13,741 / 434,112, extent 15 -> 45,669 / 1,513,231. Edge order also follows flyvis
(type pair, then offset, then source cell), so per-edge parameter files line up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from neurocast.data.connectome import Connectome
from neurocast.errors import DataError

CONNECTOME_FILE = "fib25-fib19_v2.2.json"
INSTALL_HINT = "pip install --no-deps flyvis==1.2.0"


def connectome_path(path: str | Path | None = None) -> Path:
    """The connectome JSON: ``path`` if given, else the copy inside the installed flyvis wheel."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DataError(f"connectome file {p} does not exist")
        return p
    import importlib.util

    spec = importlib.util.find_spec("flyvis")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the flyvis connectome file is missing: install it with `{INSTALL_HINT}`")
    p = Path(list(spec.submodule_search_locations)[0]) / "connectome" / CONNECTOME_FILE
    if not p.is_file():
        raise DataError(f"the flyvis connectome file {p} is missing: reinstall it with `{INSTALL_HINT}`")
    return p


def hex_columns(extent: int) -> np.ndarray:
    """(C, 2) axial coordinates (u, v) of the columns of a lattice of radius ``extent``, in flyvis order."""
    if extent < 0:
        raise DataError(f"extent must be >= 1, got {extent}")
    cols = [
        (u, v)
        for u in range(-extent, extent + 1)
        for v in range(max(-extent, -extent - u), min(extent, extent - u) + 1)
    ]
    return np.asarray(cols, dtype=np.int64)


def hex_to_cartesian(uv: np.ndarray) -> np.ndarray:
    """Axial (u, v) -> (x, y) in units of the column spacing (neighbouring columns are 1 apart)."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([uv[:, 0] + 0.5 * uv[:, 1], uv[:, 1] * np.sqrt(3) / 2], axis=1)


def fill_hull(offsets: list, n_syn_fill: float) -> list:
    """Offsets plus every lattice point inside the convex hull of the reported ones (flyvis's rule)."""
    import matplotlib.path as mpath
    import scipy.spatial as sps

    pts = np.array([o[0] for o in offsets], dtype=np.int64)
    known = set(map(tuple, pts.tolist()))
    # Same construction as flyvis: hull of the (slightly scaled, joggled) points, then a
    # polygon through the hull vertices tested on the bounding-box grid.
    hull = sps.ConvexHull((1 + 1e-6) * pts, False, "QJ")
    polygon = mpath.Path(pts[hull.vertices])
    uu, vv = np.mgrid[pts[:, 0].min() : pts[:, 0].max() + 1, pts[:, 1].min() : pts[:, 1].max() + 1]
    grid = np.stack([uu.ravel(), vv.ravel()], axis=1)
    inside = grid[polygon.contains_points(grid)]
    return list(offsets) + [[[int(u), int(v)], n_syn_fill] for u, v in inside.tolist() if (u, v) not in known]


@dataclass(frozen=True, eq=False)
class FlyNetwork:
    """Cells, synapses and lattice of the fly visual system model (no parameters)."""

    extent: int
    type_names: tuple[str, ...]          # 65 cell types, file order
    roles: tuple[str, ...]               # per type: input | intermediate | output
    node_type: np.ndarray                # (N,) index into type_names
    u: np.ndarray                        # (N,) column coordinates
    v: np.ndarray
    edge_source: np.ndarray              # (E,) presynaptic cell
    edge_target: np.ndarray              # (E,) postsynaptic cell
    edge_type: np.ndarray                # (E,) index into edge_type_keys
    edge_du: np.ndarray                  # (E,) target u - source u
    edge_dv: np.ndarray
    n_syn: np.ndarray                    # (E,) synapse count (filled offsets: n_syn_fill)
    edge_type_keys: tuple[tuple[str, str], ...]  # (source type, target type), file order
    edge_type_sign: np.ndarray           # (n_edge_types,) +1 / -1
    columns: np.ndarray                  # (C, 2) lattice columns, flyvis order
    input_nodes: np.ndarray              # (8C,) photoreceptor cells
    input_columns: np.ndarray            # (8C,) their column index into `columns`
    source_file: str

    @property
    def n_nodes(self) -> int:
        return int(self.node_type.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_source.shape[0])

    @property
    def n_columns(self) -> int:
        return int(self.columns.shape[0])

    @property
    def cell_types(self) -> np.ndarray:
        """(N,) cell-type name of every cell."""
        return np.asarray(self.type_names, dtype=object)[self.node_type]

    @property
    def positions(self) -> np.ndarray:
        """(N, 2) cartesian position of every cell's column (column spacing = 1)."""
        return hex_to_cartesian(np.stack([self.u, self.v], axis=1)).astype(np.float32)

    def neuron_ids(self) -> list[str]:
        names = self.type_names
        return [f"{names[t]}@{u},{v}" for t, u, v in zip(self.node_type.tolist(), self.u.tolist(), self.v.tolist())]

    def connectome(self, weights: np.ndarray | None = None) -> Connectome:
        """The synapses as a sparse connectome (weights default to signed synapse counts)."""
        if weights is None:
            weights = self.edge_type_sign[self.edge_type] * self.n_syn
        return Connectome.from_edges(self.edge_source, self.edge_target, weights, self.n_nodes)

    def type_index(self, name: str) -> int:
        try:
            return self.type_names.index(name)
        except ValueError:
            raise DataError(f"unknown cell type {name!r}") from None


@lru_cache(maxsize=8)
def build_network(extent: int, file: str | None = None, n_syn_fill: float = 1.0) -> FlyNetwork:
    """Build the network for a lattice of radius ``extent`` (cached per arguments)."""
    if not isinstance(extent, (int, np.integer)) or extent < 1:
        raise DataError(f"extent must be an integer >= 1, got {extent!r}")
    path = connectome_path(file)
    try:
        spec = json.loads(path.read_text())
        node_specs, edge_specs = spec["nodes"], spec["edges"]
        inputs, outputs = set(spec["input_units"]), set(spec["output_units"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"connectome file {path} is unreadable: {exc}") from None

    columns = hex_columns(extent)
    type_names = tuple(n["name"] for n in node_specs)
    n_types = len(type_names)
    size = 2 * extent + 1
    # lookup[t, u + n, v + n] = cell index or -1
    lookup = -np.ones((n_types, size, size), dtype=np.int64)
    node_type, us, vs = [], [], []
    count = 0
    for t, n in enumerate(node_specs):
        pattern, args = n["pattern"]
        if pattern == "stride":
            su, sv = args
        elif pattern == "tile":
            su = sv = args
        elif pattern == "single":
            su = sv = 1
        else:
            raise DataError(f"connectome file {path}: unknown node pattern {pattern!r} for {n['name']}")
        cols = columns if pattern != "single" else np.zeros((1, 2), np.int64)
        keep = cols[(cols[:, 0] % su == 0) & (cols[:, 1] % sv == 0)]
        idx = np.arange(count, count + len(keep))
        lookup[t, keep[:, 0] + extent, keep[:, 1] + extent] = idx
        node_type.append(np.full(len(keep), t))
        us.append(keep[:, 0])
        vs.append(keep[:, 1])
        count += len(keep)
    node_type_a = np.concatenate(node_type)
    u_a, v_a = np.concatenate(us), np.concatenate(vs)

    type_id = {name: i for i, name in enumerate(type_names)}
    src_l, tgt_l, et_l, n_l = [], [], [], []
    keys: list[tuple[str, str]] = []
    signs: list[float] = []
    for e in edge_specs:
        try:
            s, t = type_id[e["src"]], type_id[e["tar"]]
        except KeyError as exc:
            raise DataError(f"connectome file {path}: edge refers to unknown cell type {exc}") from None
        k = len(keys)
        keys.append((e["src"], e["tar"]))
        signs.append(float(e["alpha"]))
        offsets = fill_hull(e["offsets"], n_syn_fill) if n_syn_fill > 0 and len(e["offsets"]) >= 3 else e["offsets"]
        src_nodes = np.flatnonzero(node_type_a == s)
        su, sv = u_a[src_nodes], v_a[src_nodes]
        for (du, dv), n_syn in offsets:
            tu, tv = su + du, sv + dv
            ok = (np.abs(tu) <= extent) & (np.abs(tv) <= extent)
            tgt = np.full(src_nodes.shape, -1, dtype=np.int64)
            tgt[ok] = lookup[t, tu[ok] + extent, tv[ok] + extent]
            hit = tgt >= 0
            src_l.append(src_nodes[hit])
            tgt_l.append(tgt[hit])
            et_l.append(np.full(hit.sum(), k))
            n_l.append(np.full(hit.sum(), n_syn, dtype=np.float64))

    edge_source = np.concatenate(src_l)
    edge_target = np.concatenate(tgt_l)
    edge_type = np.concatenate(et_l)
    # photoreceptors: cells of the input types, in type then column order
    input_types = [i for i, name in enumerate(type_names) if name in inputs]
    col_index = {(int(a), int(b)): i for i, (a, b) in enumerate(columns.tolist())}
    input_nodes = np.concatenate([np.flatnonzero(node_type_a == t) for t in input_types])
    input_columns = np.array([col_index[(int(u_a[i]), int(v_a[i]))] for i in input_nodes], dtype=np.int64)
    roles = tuple("input" if n in inputs else "output" if n in outputs else "intermediate" for n in type_names)
    return FlyNetwork(
        extent=int(extent),
        type_names=type_names,
        roles=roles,
        node_type=node_type_a,
        u=u_a,
        v=v_a,
        edge_source=edge_source,
        edge_target=edge_target,
        edge_type=edge_type,
        edge_du=u_a[edge_target] - u_a[edge_source],
        edge_dv=v_a[edge_target] - v_a[edge_source],
        n_syn=np.concatenate(n_l).astype(np.float32),
        edge_type_keys=tuple(keys),
        edge_type_sign=np.asarray(signs, dtype=np.float32),
        columns=columns,
        input_nodes=input_nodes,
        input_columns=input_columns,
        source_file=str(path),
    )
