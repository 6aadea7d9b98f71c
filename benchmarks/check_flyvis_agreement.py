"""Local check: neurocast's fly visual system simulator against flyvis's own ``Network``.

Not part of the test suite. It needs an environment where the full ``flyvis==1.2.0``
imports (its many dependencies; torchvision can be a stub, nothing here resizes
videos) next to neurocast, e.g. a separate venv::

    /tmp/fv/bin/python benchmarks/check_flyvis_agreement.py [--extents 4 8]

For every extent it builds flyvis's untrained network (its default constructor, only the
connectome extent changed) and neurocast's ``build_network`` / ``default_parameters(seed=0)``,
then compares

1. structure: node and edge counts, node type/u/v, edge source/target indices, the
   photoreceptor (input) cells and their columns;
2. parameters: per-node bias and time constant, per-edge synapse count and weight;
3. trajectories: the same random per-column luminance (T frames, B sequences) through
   ``Network.forward`` (stimulus built with flyvis's own ``Stimulus.add_input``) and through
   ``FlySimulator.run`` from the same initial voltage (the bias, flyvis's initial state),
   in float32 on the CPU, for flyvis's default strengths and for strengths scaled up by
   one common factor (excitatory spectral radius 0.9, a responsive network). A float64
   NumPy Euler integration with flyvis's parameters is the reference for the roundoff
   level of each float32 implementation.

Nothing is downloaded: only the connectome file shipped inside the flyvis wheel is read.
flyvis writes its compiled connectome cache under ``$FLYVIS_ROOT_DIR`` (set here to a
temporary folder unless already set). Exits 1 when a structural check fails, a
parameter's relative difference exceeds ``--tol`` (1e-4), or a trajectory error relative
to each cell's own voltage scale (``rel/node``: |a - b| / max(max_t |V_cell|, 1e-3))
does. The pointwise ``max rel`` (|a - b| / max(|b|, 1e-3)) is printed too, with the |b|
where it peaks: it is dominated by voltages passing near zero, where float32 roundoff of
either implementation alone (see the float64 rows) already exceeds 1e-4.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("FLYVIS_ROOT_DIR", str(Path(tempfile.gettempdir()) / "neurocast_flyvis_root"))

import numpy as np  # noqa: E402
import scipy.sparse as sps  # noqa: E402
import torch  # noqa: E402

DT = 0.02


def rel_err(a: np.ndarray, b: np.ndarray, floor: float = 1e-3) -> float:
    """max |a - b| / max(|b|, floor)."""
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor))) if a.size else 0.0


def build_flyvis(extent: int):
    from datamate import Namespace
    from flyvis.network import Network

    torch.set_default_device("cpu")
    return Network(
        connectome=Namespace(
            type="ConnectomeFromAvgFilters", file="fib25-fib19_v2.2.json", extent=extent, n_syn_fill=1
        )
    )


def structure_checks(fv, net) -> list[tuple[str, bool, str]]:
    c = fv.connectome
    rows: list[tuple[str, bool, str]] = []
    rows.append(("n_nodes", fv.n_nodes == net.n_nodes, f"flyvis {fv.n_nodes} / neurocast {net.n_nodes}"))
    rows.append(("n_edges", fv.n_edges == net.n_edges, f"flyvis {fv.n_edges} / neurocast {net.n_edges}"))
    if fv.n_nodes == net.n_nodes:
        types = np.asarray(c.nodes.type[:]).astype(str)
        ok_t = bool(np.array_equal(types, net.cell_types.astype(str)))
        ok_uv = bool(np.array_equal(c.nodes.u[:], net.u) and np.array_equal(c.nodes.v[:], net.v))
        rows.append(("node type order", ok_t, ""))
        rows.append(("node (u, v)", ok_uv, ""))
    if fv.n_edges == net.n_edges:
        src, tgt = np.asarray(c.edges.source_index[:]), np.asarray(c.edges.target_index[:])
        rows.append(("edge source_index", bool(np.array_equal(src, net.edge_source)),
                     f"{int((src != net.edge_source).sum())} differ"))
        rows.append(("edge target_index", bool(np.array_equal(tgt, net.edge_target)),
                     f"{int((tgt != net.edge_target).sum())} differ"))
        rows.append(("edge (du, dv)", bool(np.array_equal(c.edges.du[:], net.edge_du)
                                            and np.array_equal(c.edges.dv[:], net.edge_dv)), ""))
    # photoreceptors: flyvis's Stimulus maps hexal i of its input video to input_index[:, i]
    inp = np.asarray(fv.stimulus.input_index)  # (8, n_hexals)
    hex_uv = np.stack([c.nodes.u[:][inp[0]], c.nodes.v[:][inp[0]]], axis=1)
    rows.append(("input hexal order == net.columns", bool(np.array_equal(hex_uv, net.columns)),
                 f"{inp.shape[1]} hexals / {net.n_columns} columns"))
    ok_in = inp.size == net.input_nodes.size and bool(
        np.array_equal(inp.reshape(-1), net.input_nodes)
        and np.array_equal(np.tile(np.arange(inp.shape[1]), inp.shape[0]), net.input_columns)
    )
    rows.append(("input cells / columns", ok_in, f"{inp.size} input cells"))
    return rows


def flyvis_params(fv) -> dict[str, np.ndarray]:
    with torch.no_grad():
        p = fv._param_api()
        return {
            "bias": p.nodes.bias.detach().cpu().numpy().copy(),
            "time_const": p.nodes.time_const.detach().cpu().numpy().copy(),
            "syn_count": p.edges.syn_count.detach().cpu().numpy().copy(),
            "sign": p.edges.sign.detach().cpu().numpy().copy(),
            "weight": p.edges.weight.detach().cpu().numpy().copy(),
        }


def param_checks(fvp: dict, net, p) -> list[tuple[str, float, float]]:
    ours = {
        "bias": p.node_bias(net),
        "time_const": p.node_time_const(net),
        "syn_count": p.syn_count,
        "sign": p.sign[net.edge_type],
        "weight": p.edge_weights(net),
    }
    out = []
    for k, theirs in fvp.items():
        a = ours[k]
        if a.shape != theirs.shape:
            out.append((k, float("nan"), float("nan")))
            continue
        out.append((k, float(np.max(np.abs(a - theirs))), rel_err(a, theirs, floor=1e-12)))
    return out


def reference_run(fvp: dict, net, stim: np.ndarray, v0: np.ndarray) -> np.ndarray:
    """float64 Euler with flyvis's parameters; stim (B, T, C) -> (B, T, N), frame t = after step t."""
    W = sps.csr_matrix((fvp["weight"].astype(np.float64), (net.edge_target, net.edge_source)),
                       shape=(net.n_nodes, net.n_nodes))
    k = DT / np.maximum(fvp["time_const"].astype(np.float64), DT)
    b = fvp["bias"].astype(np.float64)
    B, T, _ = stim.shape
    V = np.repeat(v0.astype(np.float64)[:, None], B, axis=1)  # (N, B)
    out = np.empty((B, T, net.n_nodes))
    for t in range(T):
        x = np.zeros_like(V)
        x[net.input_nodes] = stim[:, t, net.input_columns].T
        V = V + k[:, None] * (-V + b[:, None] + W @ np.maximum(V, 0.0) + x)
        out[:, t] = V.T
    return out


def trajectory_errors(a: np.ndarray, b: np.ndarray, v0: np.ndarray) -> dict[str, float]:
    """Errors of ``a`` against ``b`` (both (B, T, N)).

    max_rel: max |a - b| / max(|b|, 1e-3), pointwise (large where a voltage crosses zero);
    rel_node: max |a - b| / max(max_t |b_node|, 1e-3), each cell against its own voltage scale;
    rel_to_response: max |a - b| / max |b - v0| (the largest deviation from the start).
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = np.abs(a64 - b64)
    pointwise = d / np.maximum(np.abs(b64), 1e-3)
    i = np.unravel_index(int(np.argmax(pointwise)), pointwise.shape)
    node_scale = np.maximum(np.abs(b64).max(axis=(0, 1)), 1e-3)
    resp = float(np.max(np.abs(b64 - v0[None, None, :])))
    return {
        "max_abs": float(d.max()),
        "max_rel": float(pointwise[i]),
        "b_at_max_rel": float(b64[i]),
        "rel_node": float((d / node_scale[None, None, :]).max()),
        "rel_to_response": float(d.max() / max(resp, 1e-12)),
        "response": resp,
    }


def run_extent(extent: int, frames: int, batch: int, seed: int, gain: float, tol: float) -> bool:
    from neurocast.sim.fly_dynamics import FlySimulator, FlyState
    from neurocast.sim.fly_network import build_network
    from neurocast.sim.fly_params import default_parameters, scale_gains

    ok = True
    print(f"\n=== extent {extent} ===")
    t0 = time.perf_counter()
    fv = build_flyvis(extent)
    net = build_network(extent)
    p = default_parameters(net, seed=0)
    print(f"built both networks in {time.perf_counter() - t0:.1f} s")

    print(f"\n{'structure check':36s} {'equal':6s} detail")
    for name, eq, detail in structure_checks(fv, net):
        ok &= eq
        print(f"{name:36s} {str(eq):6s} {detail}")
    if not ok:
        print("structure differs: parameters and trajectories are not comparable")
        return False

    fvp = flyvis_params(fv)
    print(f"\n{'parameter':12s} {'max |diff|':>12s} {'max rel diff':>13s}")
    for name, d_abs, d_rel in param_checks(fvp, net, p):
        ok &= bool(d_rel <= tol)
        print(f"{name:12s} {d_abs:12.3e} {d_rel:13.3e}")

    rng = np.random.default_rng(seed)
    stim = rng.random((batch, frames, net.n_columns)).astype(np.float32)  # (B, T, C) luminance in [0, 1)

    scenarios = [("flyvis default init", 1.0)]
    if gain > 0:
        scaled = scale_gains(net, p, gain)
        factors = scaled.syn_strength.astype(np.float64) / p.syn_strength.astype(np.float64)
        factor = float(np.median(factors))
        assert np.allclose(factors, factor, rtol=1e-6), "scale_gains did not scale all strengths alike"
        scenarios.append((f"strengths x{factor:.2f} (exc. radius {gain})", factor))

    print(f"\ntrajectories: {frames} frames x {batch} sequences, dt={DT}, random luminance per column, float32 CPU")
    print(f"{'scenario':36s} {'comparison':25s} {'max|a-b|':>9s} {'max rel':>9s} {'(at |b|)':>9s} "
          f"{'rel/node':>9s} {'/resp.':>9s} {'response':>9s}")
    for label, factor in scenarios:
        with torch.no_grad():
            fv.edges_syn_strength.data.mul_(factor)
        try:
            fvp_s = flyvis_params(fv)
            # flyvis: the whole-network stimulus from its own Stimulus class
            fv.stimulus.zero(batch, frames)
            fv.stimulus.add_input(torch.from_numpy(stim)[:, :, None, :])
            x_fv = fv.stimulus()
            with torch.no_grad():
                v_fv = fv(x_fv, dt=DT).detach().cpu().numpy()  # (B, T, N), frame t = after step t
        finally:
            with torch.no_grad():
                fv.edges_syn_strength.data.div_(factor)
        # the same stimulus built by hand must match flyvis's buffer
        x_hand = np.zeros((batch, frames, net.n_nodes), np.float32)
        x_hand[:, :, net.input_nodes] = stim[:, :, net.input_columns]
        stim_ok = bool(np.array_equal(x_hand, x_fv.cpu().numpy()))

        ps = p if factor == 1.0 else scale_gains(net, p, gain)
        sim = FlySimulator(net, ps, dt=DT, noise_std=0.0, device="cpu")
        v0 = ps.node_bias(net)
        state = FlyState(voltage=torch.from_numpy(v0)[:, None].repeat(1, batch).contiguous(), calcium=None)
        out, last = sim.run(state, torch.from_numpy(np.ascontiguousarray(stim.transpose(1, 2, 0))),
                            channels=("voltage",))
        v = out["voltage"].numpy()  # (T, N, B), frame t = before step t
        start_ok = bool(np.array_equal(v[0], np.repeat(v0[:, None], batch, axis=1)))
        v_nc = np.concatenate([v[1:], last.voltage.numpy()[None]], axis=0).transpose(2, 0, 1)  # (B, T, N)

        ref = reference_run(fvp_s, net, stim, fvp_s["bias"])
        rows = [
            ("neurocast vs flyvis", trajectory_errors(v_nc, v_fv, v0)),
            ("flyvis vs float64 ref", trajectory_errors(v_fv, ref, v0)),
            ("neurocast vs float64 ref", trajectory_errors(v_nc, ref, v0)),
        ]
        w_rel = rel_err(ps.edge_weights(net), fvp_s["weight"], floor=1e-12)
        for i, (name, e) in enumerate(rows):
            print(f"{label if i == 0 else '':36s} {name:25s} {e['max_abs']:9.2e} {e['max_rel']:9.2e} "
                  f"{abs(e['b_at_max_rel']):9.2e} {e['rel_node']:9.2e} {e['rel_to_response']:9.2e} "
                  f"{e['response']:9.2e}")
        print(f"{'':36s} stimulus buffer equal: {stim_ok}; neurocast frame 0 == bias: {start_ok}; "
              f"weight max rel diff {w_rel:.3e}")
        ok &= stim_ok and start_ok and rows[0][1]["rel_node"] <= tol and w_rel <= tol
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extents", type=int, nargs="+", default=[4])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gain", type=float, default=0.9,
                    help="also run with strengths scaled to this excitatory spectral radius (0: skip)")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args(argv)
    try:
        import flyvis  # noqa: F401
    except Exception as exc:  # pragma: no cover - environment problem
        print(f"flyvis does not import here ({exc}); run this with an environment where it does", file=sys.stderr)
        return 2
    torch.set_default_device("cpu")
    ok = True
    for extent in args.extents:
        ok &= run_extent(extent, args.frames, args.batch, args.seed, args.gain, args.tol)
    print(f"\n{'PASS' if ok else 'FAIL'} (tolerance {args.tol:g} on parameter relative differences "
          "and on trajectory rel/node errors, neurocast vs flyvis)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
