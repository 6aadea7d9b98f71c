import shutil

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from neurocast.config import validate
from neurocast.data.store import open_recording
from neurocast.errors import ConfigError, DataError
from neurocast.schema.rnn_simulation import RNNSimulationConfig
from neurocast.sim.rnn_sessions import COMPLETE, build_session, build_sessions, dataset_folder, simulate_rnn

SMALL = {
    "task": "rnn_simulation",
    "name": "tiny_rnn",
    "n_units": 40,
    "n_sessions": 3,
    "observed_units": 25,
    "duration_s": 2.0,
    "downsample": 5,
    "warmup_s": 0.2,
}


def config(**changes) -> RNNSimulationConfig:
    return validate(RNNSimulationConfig, {**SMALL, **changes})


def read_all(folder, n_sessions: int = 3) -> list[np.ndarray]:
    return [open_recording(folder / f"session_{s:02d}.zarr").read() for s in range(n_sessions)]


def test_layout_frames_and_observed_subsets(tmp_path):
    cfg = config()
    folder = simulate_rnn(cfg, tmp_path / "rnn")
    assert (folder / COMPLETE).exists() and (folder / "simulation.yaml").exists()
    assert yaml.safe_load((folder / "simulation.yaml").read_text())["n_units"] == 40
    subsets = []
    for s in range(3):
        rec = open_recording(folder / f"session_{s:02d}.zarr")
        assert rec.session == f"session_{s:02d}"
        assert rec.dt == pytest.approx(cfg.dt * cfg.downsample)
        assert rec.T == round(cfg.duration_s / cfg.dt / cfg.downsample) == 40
        assert rec.N == 25
        observed = rec.provenance["observed_units"]
        assert len(set(observed)) == 25 and all(0 <= k < 40 for k in observed)
        assert list(rec.neuron_ids) == [f"unit{k}" for k in observed]
        assert rec.provenance["connectivity_noise"] == 0.5 and rec.provenance["gain"] == 2.0
        assert rec.provenance["seed"] == 0 and rec.provenance["template_seed"] == 0
        data = rec.read()
        assert np.all(np.abs(data) <= 1) and data.std() > 0.05  # tanh rates, active network
        subsets.append(tuple(observed))
    assert len(set(subsets)) == 3  # every session observes its own subset


def test_seeded_determinism(tmp_path):
    a = read_all(simulate_rnn(config(), tmp_path / "a"))
    b = read_all(simulate_rnn(config(), tmp_path / "b"))
    c = read_all(simulate_rnn(config(seed=1), tmp_path / "c"))
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        assert not np.allclose(x, z)


def test_eta_zero_shares_connectivity_but_not_activity(tmp_path):
    cfg = config(connectivity_noise=0.0, observed_units=40)
    sessions = build_sessions(cfg)
    for s in sessions[1:]:
        np.testing.assert_array_equal(s.connectivity, sessions[0].connectivity)
        assert not np.array_equal(s.h0, sessions[0].h0)
    data = read_all(simulate_rnn(cfg, tmp_path / "eta0"))
    assert not np.allclose(data[0], data[1]) and not np.allclose(data[1], data[2])
    # with eta > 0 the networks differ, and each J entry keeps variance g^2 / N
    J = [s.connectivity for s in build_sessions(config(n_units=200, observed_units=10))]
    assert not np.allclose(J[0], J[1])
    assert np.var(J[0]) * 200 / 2.0**2 == pytest.approx(1.0, rel=0.05)
    # a session's network, state and subset do not depend on how many sessions there are
    alone, among_more = build_sessions(config())[2], build_session(config(n_sessions=5), 2)
    np.testing.assert_array_equal(alone.connectivity, among_more.connectivity)
    np.testing.assert_array_equal(alone.h0, among_more.h0)
    np.testing.assert_array_equal(alone.observed, among_more.observed)


def test_reuse_and_refusal(tmp_path):
    cfg = config(output_root=str(tmp_path / "sim"))
    folder = simulate_rnn(cfg)
    assert folder == dataset_folder(cfg) and folder.parent == tmp_path / "sim"
    assert folder.name.startswith("tiny_rnn-")
    stamp = (folder / "session_00.zarr" / "zarr.json").stat().st_mtime_ns
    # same numbers, other description / output root: same folder name, reused without simulating
    same = config(output_root=str(tmp_path / "sim"), description="again")
    assert dataset_folder(same) == folder
    assert simulate_rnn(same) == folder
    assert (folder / "session_00.zarr" / "zarr.json").stat().st_mtime_ns == stamp
    # an interrupted run (no COMPLETE marker) is finished from the stores already written
    (folder / COMPLETE).unlink()
    assert simulate_rnn(cfg) == folder and (folder / COMPLETE).exists()
    # another config gets another folder, and never overwrites this one
    other = config(output_root=str(tmp_path / "sim"), gain=1.5)
    assert dataset_folder(other) != folder
    with pytest.raises(DataError, match="different simulation"):
        simulate_rnn(other, folder)
    # a folder of something else is refused too
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a simulated dataset"):
        simulate_rnn(cfg, foreign)


def test_missing_session_is_rewritten_identically(tmp_path):
    folder = simulate_rnn(config(), tmp_path / "rnn")
    before = read_all(folder)
    shutil.rmtree(folder / "session_01.zarr")
    (folder / COMPLETE).unlink()
    simulate_rnn(config(), folder)
    for x, y in zip(before, read_all(folder)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"observed_units": 41}, "observed_units"),
        ({"connectivity_noise": 1.5}, "connectivity_noise"),
        ({"gain": 0.0}, "gain"),
        ({"gain": -1.0}, "gain"),
        ({"n_sessions": 0}, "n_sessions"),
        ({"dt": 0.5}, "tau"),
        ({"duration_s": 0.04}, "at least 2"),
        ({"sessions": 3}, "unknown config key"),
    ],
)
def test_invalid_configs_are_clear_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        config(**changes)
    with pytest.raises(ValidationError):
        RNNSimulationConfig.model_validate({**SMALL, **changes})
