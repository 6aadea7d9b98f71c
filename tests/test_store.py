import numpy as np
import pytest

from neurocast.data import Connectome, Recording, RecordingWriter, load_recordings, open_recording, write_recording
from neurocast.errors import DataError


def full_recording(rng, T=300, N=7):
    return Recording(
        channels={"voltage": rng.normal(size=(T, N)), "calcium": rng.random((T, N))},
        primary="voltage",
        dt=0.02,
        stimulus=rng.normal(size=(T, 3)),
        time=np.cumsum(rng.random(T) + 0.01),
        covariates={"speed": rng.normal(size=T)},
        neuron_ids=[f"n{i}" for i in range(N)],
        cell_types=["A", "B", "A", "C", "B", "A", "C"][:N],
        positions=rng.normal(size=(N, 2)),
        connectome=Connectome.from_edges([0, 1, 2], [1, 2, 3], [0.5, -1.0, 2.0], N),
        session="s1",
        provenance={"note": "test"},
    )


def test_round_trip_is_exact(tmp_path, rng):
    rec = full_recording(rng)
    path = write_recording(rec, tmp_path / "r.zarr", chunk_steps=64)
    back = open_recording(path)
    assert not back.in_memory  # lazy
    for c in rec.channels:
        assert np.array_equal(back.read(channel=c), rec.read(channel=c))
    assert np.array_equal(back.read_stimulus(), rec.stimulus)
    assert np.array_equal(back.time, rec.time)
    assert np.array_equal(back.covariates["speed"], rec.covariates["speed"])
    assert list(back.neuron_ids) == list(rec.neuron_ids) and list(back.cell_types) == list(rec.cell_types)
    assert np.array_equal(back.positions, rec.positions)
    assert np.array_equal(back.connectome.indices, rec.connectome.indices)
    assert np.array_equal(back.connectome.weights, rec.connectome.weights)
    assert back.session == "s1" and back.primary == "voltage" and back.dt == 0.02
    assert back.provenance["note"] == "test"
    # any range, without reading the rest
    assert np.array_equal(back.read(100, 170, channel="calcium"), rec.read(100, 170, channel="calcium"))
    assert load_recordings(path)[0].T == 300


def test_incremental_append_in_uneven_blocks(tmp_path, rng):
    N = 5
    data = rng.normal(size=(1000, N)).astype(np.float32)
    with RecordingWriter(tmp_path / "s.zarr", n_neurons=N, dt=0.1, chunk_steps=128) as w:
        t = 0
        for size in [1, 127, 300, 5, 400, 167]:
            w.append({"activity": data[t : t + size]})
            t += size
            # at most one partial chunk is buffered
            assert all(b.n_pending < 128 for b in w._arrays.values())
    back = open_recording(tmp_path / "s.zarr")
    assert np.array_equal(back.read(), data)


def test_interrupted_write_leaves_no_store(tmp_path, rng):
    path = tmp_path / "x.zarr"
    with pytest.raises(RuntimeError):
        with RecordingWriter(path, n_neurons=3, dt=0.1) as w:
            w.append({"activity": np.zeros((10, 3))})
            raise RuntimeError("killed")
    assert not path.exists()
    assert not list(tmp_path.iterdir())  # no partial folder left


def test_writer_refuses_nan_and_overwrite(tmp_path):
    path = tmp_path / "y.zarr"
    x = np.zeros((10, 3))
    x[4, 1] = np.nan
    with pytest.raises(DataError, match="NaN at frame 14, column 1"):
        with RecordingWriter(path, n_neurons=3, dt=0.1) as w:
            w.append({"activity": np.zeros((10, 3))})
            w.append({"activity": x[:5]})  # frame numbers count from the store's start
    write_recording(Recording(np.zeros((5, 3)), 0.1), path)
    with pytest.raises(DataError, match="already exists"):
        write_recording(Recording(np.zeros((5, 3)), 0.1), path)


def test_incomplete_store_is_refused(tmp_path):
    import json

    path = write_recording(Recording(np.zeros((5, 3)), 0.1), tmp_path / "z.zarr")
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["complete"] = False
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="incomplete"):
        open_recording(path)


def test_large_lazy_reads_are_assembled_block_by_block(tmp_path, rng, monkeypatch):
    import neurocast.data.recording as recording

    rec = full_recording(rng, T=1000, N=7)
    back = open_recording(write_recording(rec, tmp_path / "r.zarr", chunk_steps=64))
    monkeypatch.setattr(recording, "READ_BLOCK_BYTES", 1000)  # many blocks per read
    for a, b in [(0, 1000), (3, 997), (130, 131), (64, 640)]:
        assert np.array_equal(back.read(a, b), rec.read(a, b))
        assert np.array_equal(back.read_stimulus(a, b), rec.read_stimulus(a, b))
