import numpy as np
import pytest

from neurocast.data import Connectome, Recording
from neurocast.errors import DataError


def make(T=20, N=5, **kw):
    return Recording(np.random.default_rng(0).normal(size=(T, N)), kw.pop("dt", 0.1), **kw)


def test_valid_recording_is_float32_and_summarised():
    rec = make(stimulus=np.zeros((20, 3)), cell_types=list("aabbc"), positions=np.zeros((5, 2)))
    assert rec.activity.dtype == np.float32 and (rec.T, rec.N, rec.stimulus_dims) == (20, 5, 3)
    s = rec.summary()
    assert s["n_cell_types"] == 3 and s["n_edges"] is None and s["stimulus_dims"] == 3


def test_nan_reports_frame_and_neuron():
    x = np.zeros((10, 4))
    x[7, 2] = np.nan
    with pytest.raises(DataError, match=r"1 non-finite.*NaN at frame 7, column 2 \(id '2'\)"):
        Recording(x, 0.1)


def test_inf_in_stimulus_is_reported():
    s = np.zeros((10, 2))
    s[3, 1] = np.inf
    with pytest.raises(DataError, match=r"stimulus.*Inf at frame 3, column 1"):
        Recording(np.zeros((10, 4)), 0.1, stimulus=s)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(activity=np.zeros((0, 4))), "empty"),
        (dict(activity=np.zeros(10)), r"must be 2-D \(T, N\)"),
        (dict(dt=0), "dt must be a positive number"),
        (dict(dt=-0.1), "dt must be a positive number"),
        (dict(neuron_ids=["a", "b"]), "neuron_ids has 2 entries but the recording has N=4"),
        (dict(neuron_ids=["a", "a", "b", "c"]), "unique; 'a'"),
        (dict(cell_types=["x"] * 3), "cell_types has 3 entries"),
        (dict(positions=np.zeros((4, 5))), r"positions must have shape \(N=4, 1..3\)"),
        (dict(stimulus=np.zeros((9, 2))), r"stimulus must have shape \(T=10"),
        (dict(time=np.array([0, 1, 2, 2, 4, 5, 6, 7, 8, 9.0])), "time must increase strictly; frame 3"),
        (dict(activity=np.array([["a"] * 4] * 10)), "must be numeric"),
    ],
)
def test_invalid_input_gives_precise_error(kwargs, message):
    base = dict(activity=np.zeros((10, 4)), dt=0.1)
    base.update(kwargs)
    with pytest.raises(DataError, match=message):
        Recording(**base)


def test_connectome_validation_and_lookup():
    c = Connectome.from_edges(pre=[0, 1, 2, 2], post=[1, 2, 0, 1], weights=[1, -2, 3, 4], n_neurons=3)
    assert c.n_edges == 4
    assert sorted(c.presynaptic(1).tolist()) == [0, 2]
    assert c.presynaptic_union([0, 1]).tolist() == [0, 2]
    dense = c.to_torch().to_dense().numpy()
    assert dense[1, 2] == 4 and dense[2, 1] == -2  # W[post, pre]
    with pytest.raises(DataError, match="pre index 5 of edge 0 out of range"):
        Connectome.from_edges([5], [0], [1.0], 3)
    with pytest.raises(DataError, match=r"presynaptic index 7 out of range \[0, 3\)"):
        Connectome(np.array([0, 1, 1, 1]), np.array([7]), np.array([1.0]), 3)
    with pytest.raises(DataError, match="connectome is for 3 neurons but the recording has N=4"):
        Recording(np.zeros((5, 4)), 0.1, connectome=c)


def test_channels_and_slicing():
    v = np.arange(40, dtype=np.float32).reshape(10, 4)
    rec = Recording(channels={"voltage": v, "calcium": v * 2}, primary="voltage", dt=0.02, time=np.arange(10) * 0.02)
    ca = rec.with_primary("calcium")
    assert np.array_equal(ca.read(2, 4), v[2:4] * 2)
    part = rec.slice_time(3, 7)
    assert part.T == 4 and np.array_equal(part.activity, v[3:7]) and np.allclose(part.time, rec.time[3:7])
    with pytest.raises(DataError, match="no channel 'fluorescence'"):
        rec.read(channel="fluorescence")
    with pytest.raises(DataError, match=r"time range \[5, 20\) is outside"):
        rec.read(5, 20)
