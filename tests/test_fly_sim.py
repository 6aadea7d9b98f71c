import numpy as np
import pytest
import torch

from neurocast.data import load_recordings
from neurocast.errors import ConfigError, DataError
from neurocast.sim.fly_dynamics import FlySimulator, FlyState
from neurocast.sim.fly_network import build_network, connectome_path, fill_hull, hex_columns
from neurocast.sim.fly_params import default_parameters, load_parameters, parameters_to_dict, scale_gains
from neurocast.sim.fly_simulation import simulate_fly
from neurocast.tasks import load_task_config


@pytest.mark.parametrize("extent, nodes, edges", [(4, 3865, 110794), (8, 13741, 434112), (15, 45669, 1513231)])
def test_network_sizes_match_flyvis(extent, nodes, edges):
    net = build_network(extent)
    assert (net.n_nodes, net.n_edges, len(net.type_names)) == (nodes, edges, 65)
    assert net.n_columns == 3 * extent * (extent + 1) + 1
    assert len(net.input_nodes) == 8 * net.n_columns  # R1-R8 in every column
    assert net.roles.count("input") == 8 and net.roles.count("output") == 34


def test_lattice_and_lawf_strides():
    cols = hex_columns(2)
    assert len(cols) == 19 and {tuple(c) for c in cols} >= {(0, 0), (-2, 0), (2, -2), (0, 2)}
    net = build_network(4)
    lawf = net.type_index("Lawf1")
    u, v = net.u[net.node_type == lawf], net.v[net.node_type == lawf]
    assert np.all(u % 3 == 0) and np.all(v % 2 == 0) and len(u) < net.n_columns


def test_known_edges_sign_and_weight():
    net = build_network(4)
    p = default_parameters(net)
    w = p.edge_weights(net)
    key = net.edge_type_keys.index(("R1", "L1"))  # one offset (0,0) with 40 synapses, inhibitory
    sel = net.edge_type == key
    assert np.all(net.edge_du[sel] == 0) and np.all(net.edge_dv[sel] == 0)
    assert np.all(net.n_syn[sel] == 40) and net.edge_type_sign[key] == -1
    np.testing.assert_allclose(w[sel], -1 * 40 * (0.01 / 40), rtol=1e-6)
    # an excitatory multi-offset pair: strength = 0.01 / mean synapse count over its placed edges
    key = net.edge_type_keys.index(("Mi1", "T4a"))
    sel = net.edge_type == key
    assert net.edge_type_sign[key] == 1 and len(set(zip(net.edge_du[sel], net.edge_dv[sel]))) >= 1
    strength = 0.01 / net.n_syn[sel].mean()
    np.testing.assert_allclose(w[sel], net.n_syn[sel] * strength, rtol=1e-5)
    # connectome exposed as CSR by postsynaptic cell
    c = net.connectome(w)
    i = int(net.edge_target[np.flatnonzero(sel)[0]])
    assert int(net.edge_source[np.flatnonzero(sel)[0]]) in c.presynaptic(i).tolist()


def test_hull_filling_adds_interior_points_only():
    offsets = [[[0, 0], 5], [[2, 0], 3], [[0, 2], 4], [[2, 2], 1]]
    filled = fill_hull(offsets, 1.0)
    pts = {tuple(o[0]) for o in filled}
    # the interior point is added; points exactly on the hull boundary follow matplotlib's
    # point-in-polygon rule, as in flyvis (which is what makes the edge counts match)
    assert (1, 1) in pts and all(0 <= a <= 2 and 0 <= b <= 2 for a, b in pts)
    added = filled[len(offsets):]
    assert added and all(o[1] == 1.0 for o in added)
    assert not {tuple(o[0]) for o in added} & {tuple(o[0]) for o in offsets}


def test_euler_step_matches_hand_computation():
    net = build_network(1)
    p = default_parameters(net)
    dt = 0.02
    sim = FlySimulator(net, p, dt=dt)
    rng = np.random.default_rng(0)
    V0 = rng.normal(0.5, 0.3, size=net.n_nodes).astype(np.float32)
    x = rng.random(net.n_columns).astype(np.float32)
    W = np.zeros((net.n_nodes, net.n_nodes))
    np.add.at(W, (net.edge_target, net.edge_source), p.edge_weights(net))
    drive = np.zeros(net.n_nodes)
    drive[net.input_nodes] = x[net.input_columns]
    tau = p.node_time_const(net).astype(np.float64)
    expected = V0 + dt / np.maximum(tau, dt) * (-V0 + p.node_bias(net) + W @ np.maximum(V0, 0) + drive)
    ca0 = rng.random(net.n_nodes).astype(np.float32)
    state = FlyState(torch.from_numpy(V0)[:, None], torch.from_numpy(ca0)[:, None])
    new = sim.step(state, torch.from_numpy(x)[:, None])
    np.testing.assert_allclose(new.voltage[:, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    ca_expected = ca0 + dt / 0.5 * (-ca0 + np.log1p(np.exp(V0)))
    np.testing.assert_allclose(new.calcium[:, 0].numpy(), ca_expected, rtol=1e-5, atol=1e-6)


def test_gain_scaling_bounds_the_excitatory_loop():
    from neurocast.sim.fly_params import excitatory_spectral_radius

    net = build_network(2)
    p = scale_gains(net, default_parameters(net), 0.9, 2.0)
    assert excitatory_spectral_radius(net, p) == pytest.approx(0.9, rel=1e-4)
    base = default_parameters(net)
    ratio = p.syn_strength / base.syn_strength
    assert np.allclose(ratio[base.sign < 0], 2 * ratio[base.sign > 0][0], rtol=1e-5)


def test_parameter_file_round_trip_and_errors(tmp_path):
    import json

    net = build_network(1)
    p = default_parameters(net, seed=3)
    d = parameters_to_dict(net, p)
    d["nodes"]["T4a"]["bias"] = 0.123
    d["edges"]["R1->L1"]["syn_strength"] = 0.5
    f = tmp_path / "p.json"
    f.write_text(json.dumps(d))
    q = load_parameters(f, net, default_parameters(net))
    assert q.bias[net.type_index("T4a")] == pytest.approx(0.123)
    assert q.syn_strength[net.edge_type_keys.index(("R1", "L1"))] == pytest.approx(0.5)
    np.testing.assert_allclose(q.syn_count, p.syn_count)
    f.write_text(json.dumps({"nodes": {"T99": {"bias": 1}}}))
    with pytest.raises(DataError, match="unknown cell type 'T99'"):
        load_parameters(f, net, p)
    f.write_text(json.dumps({"nodes": {"T4a": {"time_const": -1}}}))
    with pytest.raises(DataError, match="nodes.T4a.time_const must be positive"):
        load_parameters(f, net, p)


TINY = {
    "task": "fly_simulation",
    "name": "tiny",
    "network": {"extent": 1, "parameters": "untrained", "excitatory_gain": 0.9},
    "dynamics": {"dt": 0.02, "noise_std": 0.01, "warmup_s": 0.2},
    "batch": 2,
    "recordings": {
        "train": {"duration_s": 1.0, "sequences": 3, "seed": 5,
                  "stimulus": {"families": {"natural": 1, "moving_edges": 1}, "segment_s": [0.2, 0.5], "seed": 1}},
        "cv": {"duration_s": 0.6, "noise_std": 0.0, "stimulus": {"families": {"gratings": 1}, "seed": 2}},
    },
}


def test_simulation_is_seeded_streamed_and_reused(tmp_path):
    cfg = load_task_config(TINY)
    a = simulate_fly(cfg, tmp_path / "a")
    b = simulate_fly(load_task_config(TINY, ["--block-steps", "7"]), tmp_path / "b")  # many small blocks
    ra, rb = load_recordings(a / "train.zarr")[0], load_recordings(b / "train.zarr")[0]
    assert (ra.T, ra.N, ra.stimulus_dims) == (150, 443, 7)
    assert ra.boundaries.tolist() == [50, 100] and ra.channels.keys() == {"voltage", "calcium", "fluorescence"}
    for c in ra.channels:
        np.testing.assert_array_equal(ra.read(channel=c), rb.read(channel=c))
    np.testing.assert_array_equal(ra.read_stimulus(), rb.read_stimulus())
    assert ra.connectome.n_edges == 8174 and ra.cell_types[0] == "R1"
    # the three sequences differ (own stimulus streams and noise)
    seqs = [ra.read(s, e) for s, e in ra.segments()]
    assert not np.allclose(seqs[0], seqs[1])
    # a different noise seed changes the numbers
    c = simulate_fly(load_task_config(TINY, ["--recordings.train.seed", "6"]), tmp_path / "c")
    assert not np.allclose(load_recordings(c / "train.zarr")[0].read(), ra.read())
    # second call reuses
    mtime = (a / "train.zarr" / "zarr.json").stat().st_mtime
    assert simulate_fly(cfg, tmp_path / "a") == a
    assert (a / "train.zarr" / "zarr.json").stat().st_mtime == mtime
    # a different config never overwrites an existing dataset folder
    with pytest.raises(DataError, match="holds a different simulation"):
        simulate_fly(load_task_config(TINY, ["--dynamics.noise-std", "0.02"]), tmp_path / "a")


def test_invalid_simulation_input(tmp_path):
    with pytest.raises(ConfigError, match=r"network.extent: .*greater than or equal to 1"):
        load_task_config(TINY, ["--network.extent", "0"])
    with pytest.raises(ConfigError, match=r"dynamics.dt: .*greater than 0"):
        load_task_config(TINY, ["--dynamics.dt", "0"])
    with pytest.raises(ConfigError, match="unknown stimulus family 'sunsets'"):
        load_task_config({**TINY, "recordings": {"x": {"duration_s": 1, "stimulus": {"families": {"sunsets": 1}}}}})
    with pytest.raises(DataError, match="does not exist"):
        connectome_path(tmp_path / "missing.json")


def test_missing_flyvis_gives_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flyvis" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install --no-deps flyvis==1.2.0"):
        connectome_path()


def test_simulate_cli_prints_path_last_and_reuses(run_cli, tmp_path):
    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    code, out, err = run_cli("simulate", cfg, "--output", tmp_path / "ds", "--recordings.train.sequences", "1")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(tmp_path / "ds")
    code, out, _ = run_cli("data", "info", tmp_path / "ds", "--json")
    rows = {r["session"]: r for r in __import__("json").loads(out)}
    assert rows["train"]["T"] == 50 and rows["train"]["n_cell_types"] == 65 and rows["train"]["n_edges"] == 8174
    code, out, err = run_cli("config", "show", cfg, "--network.extent", "3")
    assert code == 0 and "extent: 3" in out
    code, out, err = run_cli("simulate", cfg, "--network.extnt", "3")
    assert code == 2 and "did you mean 'extent'" in err
    # a preset by name, as `train` and `run` take them
    code, out, err = run_cli("simulate", "sim/rnn_sessions", "--output", tmp_path / "rnn", "--n-sessions", "1",
                             "--n-units", "20", "--observed-units", "10", "--duration-s", "2")
    assert code == 0 and out.strip().splitlines()[-1] == str(tmp_path / "rnn"), err


@pytest.mark.parametrize("batch", [1, 5, 32])
@pytest.mark.parametrize("threads", [1, 2])
def test_folded_step_equals_reference_step(batch, threads):
    """The CPU step (Euler update folded into the sparse product) against the equation as written:
    one step from random states, then 100 steps of the trained network with noise and calcium."""
    from neurocast.sim.fly_simulation import TRAINED_PARAMETERS

    net = build_network(4)
    p = load_parameters(TRAINED_PARAMETERS, net, default_parameters(net))
    sim = FlySimulator(net, p, dt=0.02, noise_std=0.01)
    assert sim.folded
    g = torch.Generator().manual_seed(0)
    V = torch.randn(net.n_nodes, batch, generator=g)
    x = torch.rand(net.n_columns, batch, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        want = sim.reference_step(V, x)
        got = sim._folded_step(V, x, None)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        out = torch.empty_like(V)
        assert sim._folded_step(V, x, out) is out
        torch.testing.assert_close(out, got, rtol=0, atol=0)
        runs = []
        for folded in (True, False):
            sim.folded = folded
            state = sim.initial_state(batch, warmup_s=0.2)
            stim = torch.rand(100, net.n_columns, batch, generator=torch.Generator().manual_seed(1))
            runs.append(sim.run(state, stim, generator=torch.Generator().manual_seed(2))[0])
    finally:
        torch.set_num_threads(before)
    for c in runs[1]:
        torch.testing.assert_close(runs[0][c], runs[1][c], rtol=1e-5, atol=1e-5)
