"""flyvis's pretrained networks, task-training our own, and the realism diagnostics."""

import json

import numpy as np
import pytest
import torch

from conftest import TINY_FLY, shared
from neurocast.errors import ConfigError, DataError
from neurocast.sim.fly_diagnostics import DS_TYPES, DiagnosticsSpec, diagnose, dsi_from_peaks, dsi_table
from neurocast.sim.fly_network import build_network
from neurocast.sim.fly_params import default_parameters
from neurocast.sim.flyvis_pretrained import load_flyvis_parameters
from neurocast.tasks import load_task_config


def _ensemble():
    return shared("flyvis_pretrained", "flow", "0000")


def test_member_000_reproduces_its_per_type_values_exactly():
    ens = _ensemble()
    raw = torch.load(ens / "000" / "best_chkpt", weights_only=True, map_location="cpu")["network"]
    net = build_network(2)
    p = load_flyvis_parameters(ens, net, member=0)
    np.testing.assert_array_equal(p.time_const, raw["nodes_time_const"].numpy())
    np.testing.assert_array_equal(p.bias, raw["nodes_bias"].numpy())
    # 605 type pairs in the connectome file, 604 groups in flyvis: Lawf1->Lawf1 has no edge
    pairs = [k for k in range(len(net.edge_type_keys)) if net.edge_type_keys[k] != ("Lawf1", "Lawf1")]
    np.testing.assert_array_equal(p.syn_strength[pairs], raw["edges_syn_strength"].numpy())
    np.testing.assert_array_equal(p.sign[pairs], raw["edges_sign"].numpy())
    # the same values whatever the extent; pairs with no edges at extent 1 still map
    p8 = load_flyvis_parameters(ens / "000", build_network(8))
    np.testing.assert_array_equal(p8.syn_strength, p.syn_strength)
    net1 = build_network(1)
    p1 = load_flyvis_parameters(ens / "000", net1)
    empty = np.flatnonzero(np.bincount(net1.edge_type, minlength=len(net1.edge_type_keys)) == 0)
    assert empty.size > 1 and np.any(p1.syn_strength[empty] > 0)
    np.testing.assert_array_equal(p1.syn_strength, p.syn_strength)
    # an edge weight is sign x exp(log count) x strength, the count of its (pair, offset)
    k = net.edge_type_keys.index(("R1", "L1"))
    e = np.flatnonzero(net.edge_type == k)[0]
    np.testing.assert_allclose(p.edge_weights(net)[e], -40 * raw["edges_syn_strength"].numpy()[pairs.index(k)],
                               rtol=1e-5)


def _fake_model(tmp_path, network: dict, name="model"):
    d = tmp_path / name
    d.mkdir()
    torch.save({"network": network, "decoder": {}}, d / "best_chkpt")
    return d


def test_bad_flyvis_files_give_one_line_errors(tmp_path):
    ens = _ensemble()
    net = build_network(1)
    raw = torch.load(ens / "000" / "best_chkpt", weights_only=True, map_location="cpu")["network"]
    # truncated checkpoint
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "best_chkpt").write_bytes((ens / "000" / "best_chkpt").read_bytes()[:5000])
    with pytest.raises(DataError, match=r"trunc/best_chkpt is not a readable torch checkpoint") as e:
        load_flyvis_parameters(trunc, net)
    assert "\n" not in str(e.value)
    # wrong shape
    bad = dict(raw, nodes_bias=raw["nodes_bias"][:64])
    with pytest.raises(DataError, match=r"nodes_bias has 64 values, our connectome has 65 cell types"):
        load_flyvis_parameters(_fake_model(tmp_path, bad, "short"), net)
    # a flipped sign and a wrong synapse count are named
    flipped = dict(raw, edges_sign=raw["edges_sign"].clone())
    flipped["edges_sign"][0] *= -1
    with pytest.raises(DataError, match=r"sign of R1->L1 is \+1, our connectome says -1"):
        load_flyvis_parameters(_fake_model(tmp_path, flipped, "sign"), net)
    counts = dict(raw, edges_syn_count=raw["edges_syn_count"] + 0.5)
    with pytest.raises(DataError, match=r"synapse count of R1->L1 at offset \(0,0\)"):
        load_flyvis_parameters(_fake_model(tmp_path, counts, "count"), net)
    # not a flyvis file, not a model directory, a missing member
    with pytest.raises(DataError, match="has no 'network' parameter dictionary"):
        d = tmp_path / "other"
        d.mkdir()
        torch.save({"model": {}}, d / "best_chkpt")
        load_flyvis_parameters(d, net)
    with pytest.raises(DataError,
                       match=r"is not a flyvis model directory: it has no best_chkpt \(an ensemble directory"):
        load_flyvis_parameters(ens, net)
    with pytest.raises(DataError, match=r"has no member 077 \(it holds 000\.\.049 \(50 members\)\)"):
        load_flyvis_parameters(ens, net, member=77)


def test_simulation_config_names_its_parameters(tmp_path):
    ens = _ensemble()
    cfg = dict(TINY_FLY, name="fly_flyvis", network={"extent": 1, "parameters": {"flyvis": str(ens), "member": 2}})
    cfg["recordings"] = {"train": {"duration_s": 2.0, "sequences": 1}}
    from neurocast.sim.fly_simulation import simulate_fly

    folder = simulate_fly(load_task_config(cfg), tmp_path / "d")
    prov = json.loads((folder / "parameters.json").read_text())["provenance"]
    assert prov["parameters"].endswith("flow/0000/002")
    # the gain heuristic belongs to the untrained initialisation only
    with pytest.raises(ConfigError, match="network.excitatory_gain shapes flyvis's untrained initialisation"):
        load_task_config(dict(TINY_FLY, network={"extent": 1, "excitatory_gain": 0.9}))
    untrained = load_task_config(dict(TINY_FLY,
                                      network={"extent": 1, "parameters": "untrained", "excitatory_gain": 0.9}))
    assert untrained.network.parameters == "untrained"


def test_dsi_of_a_hand_made_tuning_curve():
    angles = np.array([0.0, 90.0, 180.0, 270.0])
    # vector sum (2 - 1) + i (1 - 1) = 1, sum of peaks 5
    assert dsi_from_peaks(np.array([2.0, 1.0, 1.0, 1.0]), angles) == (pytest.approx(0.2), pytest.approx(0.0))
    assert dsi_from_peaks(np.array([0.0, 3.0, 0.0, 0.0]), angles)[0] == pytest.approx(1.0)
    # two speeds; ON responses of a cell preferring 90 deg, OFF responses flat and twice as large:
    # the norm is the larger of the two sums (flyvis's maximum over intensities)
    peaks = np.zeros((2, 2, 4, len(DS_TYPES)))
    peaks[:, 0, :, 0] = [1.0, 3.0, 1.0, 1.0]          # sum 6, vector 2i
    peaks[:, 1, :, 0] = 3.0                             # sum 12, vector 0
    table = dsi_table(peaks, angles)
    assert table["T4a"]["dsi_on"] == pytest.approx(2 / 12) and table["T4a"]["dsi_off"] == pytest.approx(0.0)
    assert (table["T4a"]["dsi"] == table["T4a"]["dsi_on"]
            and table["T4a"]["preferred_direction_deg"] == pytest.approx(90.0))
    assert table["T5a"]["dsi"] == 0.0  # silent cell: DSI 0, not NaN


def test_diagnostics_tell_trained_from_untrained():
    ens = _ensemble()
    net = build_network(2)
    spec = DiagnosticsSpec(natural_s=4.0, sequences=2, speeds_deg_s=(37.7,), noise_std=0.01)
    from neurocast.sim.fly_params import scale_gains

    untrained = diagnose(net, scale_gains(net, default_parameters(net), 0.9, 2.0), spec)["summary"]
    trained = diagnose(net, load_flyvis_parameters(ens, net, member=0), spec)["summary"]
    assert untrained["photoreceptor_variance_share"] > 0.5 > trained["photoreceptor_variance_share"]
    assert untrained["median_dsi_t4"] < 0.05 < trained["median_dsi_t4"]
    assert trained["forgetting_steps"] >= 1 and 0 < trained["noise_variance_share"] < 0.2


def test_fly_diagnose_cli_writes_report(run_cli, tmp_path):
    cfg = tmp_path / "fly.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(dict(TINY_FLY, network={"extent": 1, "parameters": "untrained"})))
    code, out, err = run_cli("fly", "diagnose", cfg, "--output", tmp_path / "diag", "--json")
    assert code == 0, err
    folder = tmp_path / "diag"
    assert out.strip().splitlines()[-1] == str(folder)
    assert {"diagnostics.json", "diagnostics.md", "dsi_tuning.png"} <= {p.name for p in folder.iterdir()}
    d = json.loads((folder / "diagnostics.json").read_text())
    assert set(d["direction_selectivity"]["types"]) == set(DS_TYPES) and d["parameters"].startswith("untrained")


TINY_TASK = {
    "task": "fly_task",
    "name": "tiny_flow",
    "network": {"extent": 2, "parameters": "untrained"},
    "stimulus": {"frames": 16, "burn_in": 4},
    "training": {"epochs": 2, "iterations_per_epoch": 3, "batch_size": 8, "validation_sequences": 8,
                 "steady_state_steps": 10, "lr_network": 5e-2},
    "logging": {"tensorboard": False},
}


def test_a_few_training_steps_lower_the_flow_loss():
    from neurocast.pipelines.fly_task import _optimizer, build

    task = build(load_task_config(TINY_TASK), torch.device("cpu"))
    batch = next(iter(task.batches(0)))
    opt = _optimizer(task.cfg, task)
    first = float(task.losses(batch, 0)["unexplained_flow_variance"])
    for _ in range(12):
        opt.zero_grad()
        task.losses(batch, 0)["total"].backward()
        opt.step()
    assert float(task.losses(batch, 0)["unexplained_flow_variance"]) < 0.9 * first


def test_train_task_cli_writes_parameters_that_simulate(run_cli, tmp_path):
    import yaml

    cfg = tmp_path / "task.yaml"
    cfg.write_text(yaml.safe_dump(dict(TINY_TASK, runs_dir=str(tmp_path / "runs"))))
    code, out, err = run_cli("fly", "train-task", cfg)
    assert code == 0, err
    run = tmp_path / "runs" / "tiny_flow"
    run = next(p for p in run.iterdir() if p.is_dir() and not p.is_symlink())
    assert out.strip().splitlines()[-1] == str(run)
    params = json.loads((run / "parameters.json").read_text())
    assert "syn_count" not in params and params["provenance"]["trained_by"] == "neurocast fly train-task"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["best"]["val/loss"] is not None
    # the trained values load at another extent and simulate
    from neurocast.sim.fly_simulation import simulate_fly

    sim = dict(TINY_FLY, name="from_task", network={"extent": 1, "parameters": "untrained",
                                                      "parameters_file": str(run / "parameters.json")})
    sim["recordings"] = {"train": {"duration_s": 1.0}}
    folder = simulate_fly(load_task_config(sim), tmp_path / "sim")
    assert "overridden by" in json.loads((folder / "parameters.json").read_text())["provenance"]["parameters"]
    # resuming a finished run is refused with one line
    code, _, err = run_cli("fly", "train-task", "--resume", run)
    assert code == 2 and "already complete" in err
    # `neurocast train` trains the same task (the registry's pipeline); train-task refuses other tasks
    code, out, err = run_cli("train", cfg, "--training.epochs", "1", "--run-dir", tmp_path / "via_train")
    assert code == 0 and out.strip().splitlines()[-1] == str(tmp_path / "via_train"), err
    assert (tmp_path / "via_train" / "parameters.json").exists()
    code, _, err = run_cli("fly", "train-task", "latent_20step")
    assert code == 2 and "task 'latent' is not fly_task" in err
