"""The file formats users bring: NWB optical physiology, WormWideWeb JSON, trimmed Flavell HDF5.

Every fixture is written inside the test (small NWB files with pynwb, JSON by hand, a trimmed
copy of a real Flavell file with h5py); nothing binary is committed.
"""

import json
import sys
from datetime import datetime, timezone

import h5py
import numpy as np
import pytest

from conftest import shared
from neurocast.data import load_recordings
from neurocast.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:The linked table for DynamicTableRegion")

# ---------------------------------------------------------------------------- NWB


def write_nwb(path, data, *, rate=10.0, timestamps=None, ids=(10, 11, 12), second_dff=False, fluorescence=None,
              behaviour=None, stimulus=None):
    """A small NWB file: DfOverF/plane0 (+ optional series), pixel-mask ROIs, behaviour, stimuli."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import BehavioralTimeSeries
    from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries

    nwb = NWBFile(session_description="test", identifier=path.stem, session_id="s-" + path.stem,
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    device = nwb.create_device(name="scope")
    plane = nwb.create_imaging_plane(name="plane", optical_channel=OpticalChannel(name="green", description="",
                                     emission_lambda=510.0), imaging_rate=rate, description="", device=device,
                                     excitation_lambda=920.0, indicator="GCaMP6s", location="tectum")
    ophys = nwb.create_processing_module(name="ophys", description="")
    seg = ImageSegmentation()
    ophys.add(seg)
    ps = seg.create_plane_segmentation(name="PlaneSegmentation", description="", imaging_plane=plane)
    for k, roi in enumerate(ids):
        ps.add_roi(id=roi, pixel_mask=[(2 * k, 1, 1.0), (2 * k + 2, 3, 1.0)])  # centre (2k + 1, 2)
    region = ps.create_roi_table_region(region=list(range(len(ids))), description="all")
    timing = {"timestamps": timestamps} if timestamps is not None else {"rate": rate, "starting_time": 1.5}
    series = [RoiResponseSeries(name="plane0", data=data, rois=region, unit="n.a.", **timing)]
    if second_dff:
        series.append(RoiResponseSeries(name="plane1", data=data + 1, rois=region, unit="n.a.", **timing))
    ophys.add(DfOverF(roi_response_series=series))
    if fluorescence is not None:
        ophys.add(Fluorescence(roi_response_series=RoiResponseSeries(
            name="plane0", data=fluorescence, rois=region, unit="n.a.", **timing)))
    if behaviour is not None:
        beh = nwb.create_processing_module(name="behavior", description="")
        bts = BehavioralTimeSeries(name="BehavioralTimeSeries")
        for name, (values, b_rate) in behaviour.items():
            bts.create_timeseries(name=name, data=values, unit="a.u.", rate=b_rate, starting_time=0.0)
        beh.add(bts)
    for name, (values, times) in (stimulus or {}).items():
        nwb.add_stimulus(TimeSeries(name=name, data=values, unit="a.u.", timestamps=times))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


@pytest.fixture(scope="module")
def pynwb():
    return pytest.importorskip("pynwb", reason="pynwb is not installed (pip install 'neurocast[nwb]')")


def test_nwb_round_trip_of_activity_times_ids_positions_behaviour_and_stimulus(pynwb, tmp_path):
    data = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    speed = np.arange(120, dtype=np.float64)  # 20 Hz, speed(t) = 20 t
    stim_t = np.array([0.0, 2.0, 4.0])
    path = write_nwb(tmp_path / "fish1.nwb", data, fluorescence=data * 10, behaviour={"speed": (speed, 20.0)},
                     stimulus={"contrast": (np.array([0.0, 1.0, -1.0]), stim_t)})
    (rec,) = load_recordings(path)
    assert rec.session == "fish1" and rec.provenance["series"] == "ophys/DfOverF/plane0"
    np.testing.assert_array_equal(rec.read(), data)  # the only DfOverF series is the default
    assert rec.dt == pytest.approx(0.1)
    np.testing.assert_allclose(rec.time, 1.5 + np.arange(60) / 10.0)
    assert list(rec.neuron_ids) == ["10", "11", "12"]
    np.testing.assert_allclose(rec.positions, [[1, 2], [3, 2], [5, 2]])
    v = rec.covariates["speed"][:, 0]
    inside = rec.time <= 119 / 20.0
    np.testing.assert_allclose(v[inside], 20 * rec.time[inside], rtol=1e-6)  # interpolated onto the frames
    assert inside.sum() == 45 and np.isnan(v[~inside]).all()  # after the behaviour series ends: missing
    assert rec.stimulus is None
    (with_stim,) = load_recordings(path, stimulus="contrast")
    s = with_stim.stimulus[:, 0]
    t = with_stim.time
    np.testing.assert_array_equal(s, np.where(t >= 4.0, -1.0, np.where(t >= 2.0, 1.0, 0.0)))  # value last shown
    (fl,) = load_recordings(path, series="Fluorescence/plane0")
    np.testing.assert_array_equal(fl.read(), data * 10)


def test_nwb_timestamps_folder_and_cli(pynwb, tmp_path, run_cli):
    ts = 0.25 * np.arange(1, 31)
    for k in range(2):  # a DANDI download: one folder per subject
        (tmp_path / f"sub-{k}").mkdir()
        write_nwb(tmp_path / f"sub-{k}" / f"sub-{k}_ses-1.nwb", np.full((30, 2), float(k), np.float32), timestamps=ts,
                  ids=(4, 7))
    recs = load_recordings(tmp_path)
    assert [r.session for r in recs] == ["sub-0_ses-1", "sub-1_ses-1"]
    np.testing.assert_array_equal(recs[1].time, ts)
    assert recs[0].dt == pytest.approx(0.25)
    code, out, err = run_cli("data", "info", tmp_path, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["session"], r["T"], r["N"]) for r in rows] == [("sub-0_ses-1", 30, 2), ("sub-1_ses-1", 30, 2)]


@pytest.mark.filterwarnings("ignore:RoiResponseSeries 'plane0'")
def test_nwb_bad_input_names_file_and_field(pynwb, tmp_path, run_cli):
    data = np.zeros((20, 3), np.float32)
    two = write_nwb(tmp_path / "two.nwb", data, second_dff=True, fluorescence=data)
    with pytest.raises(DataError, match=r"two.nwb: several RoiResponseSeries; choose one .*ophys/DfOverF/plane0, "
                                        r"ophys/DfOverF/plane1, ophys/Fluorescence/plane0"):
        load_recordings(two)
    with pytest.raises(DataError, match=r"two.nwb: series 'plane0' matches several series"):
        load_recordings(two, series="plane0")
    with pytest.raises(DataError, match=r"series 'plane9' is not a series of this file"):
        load_recordings(two, series="plane9")
    code, _, err = run_cli("data", "info", two)
    assert code == 2 and "several RoiResponseSeries" in err and len(err.strip().splitlines()) == 1
    bad = data.copy()
    bad[7, 2] = np.nan
    with pytest.raises(DataError, match=r"nan.nwb: ophys/DfOverF/plane0/data contains 1 non-finite .* NaN at frame 7, "
                                        r"column 2 \(id '12'\)"):
        load_recordings(write_nwb(tmp_path / "nan.nwb", bad))
    ts = write_nwb(tmp_path / "ts.nwb", data, timestamps=np.arange(20.0))
    with h5py.File(ts, "a") as f:  # pynwb refuses to write this; other writers do not
        del f["processing/ophys/DfOverF/plane0/timestamps"]
        f["processing/ophys/DfOverF/plane0/timestamps"] = np.arange(19.0)
    with pytest.raises(DataError, match=r"ts.nwb: ophys/DfOverF/plane0/timestamps has 19 entries but "
                                        r"ophys/DfOverF/plane0/data has T=20"):
        load_recordings(ts)
    with pytest.raises(DataError, match=r"late.nwb: stimulus/flash starts at 5 s, after the first imaging frame"):
        load_recordings(write_nwb(tmp_path / "late.nwb", data, stimulus={"flash": (np.ones(2), np.array([5.0, 6.0]))}),
                        stimulus="flash")
    with pytest.raises(DataError, match=r"no stimulus 'beep' \(stimuli: none\)"):
        load_recordings(write_nwb(tmp_path / "ok.nwb", data), stimulus="beep")
    (tmp_path / "empty.nwb").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.nwb: empty file"):
        load_recordings(tmp_path / "empty.nwb")
    (tmp_path / "junk.nwb").write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(DataError, match=r"junk.nwb: not a readable NWB file"):
        load_recordings(tmp_path / "junk.nwb")


def test_nwb_without_ophys_and_without_pynwb(pynwb, tmp_path, monkeypatch):
    from pynwb import NWBHDF5IO, NWBFile

    nwb = NWBFile(session_description="x", identifier="x", session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    with NWBHDF5IO(str(tmp_path / "ephys.nwb"), "w") as io:
        io.write(nwb)
    with pytest.raises(DataError, match=r"ephys.nwb: no RoiResponseSeries .* \(modules: none\)"):
        load_recordings(tmp_path / "ephys.nwb")
    monkeypatch.setitem(sys.modules, "pynwb", None)  # as if it were not installed
    with pytest.raises(DataError, match=r"reading NWB files needs pynwb: pip install 'neurocast\[nwb\]'"):
        load_recordings(tmp_path / "ephys.nwb")


# ---------------------------------------------------------------------------- WormWideWeb


def www_export(T=40, N=5, seed=0, **changes):
    """A WormWideWeb-like export: trace_array neurons x time, avg_timestep in minutes, labels."""
    x = np.random.default_rng(seed).normal(size=(N, T)).round(6)
    velocity = np.linspace(-1, 1, T).round(6).tolist()
    velocity[3] = None
    data = {
        "uid": "2022-07-20-01",
        "num_neurons": N,
        "max_t": T,
        "avg_timestep": 0.01,  # minutes: 0.6 s
        "dataset_type": ["baseline", "neuropal"],
        "trace_array": x.tolist(),
        "trace_original": (x.T * 100 + 500).tolist(),  # time x neurons in the real exports
        "velocity": velocity,
        "head_curvature": np.cos(np.arange(T)).round(6).tolist(),
        "pumping": [None] * T,
        "reversal_events": [[2, 5], [30, 32]],
        "ranges": [list(range(1, T // 2 + 1)), list(range(T // 2 + 1, T + 1))],
        "labeled": {
            "1": {"label": "AVAL", "neuron_class": "AVA", "LR": "L", "DV": "undefined", "roi_id": [3],
                  "confidence": 5, "region": "Lateral Ganglion"},
            "3": {"label": "RIM?", "neuron_class": "RIM?", "roi_id": [9], "confidence": 2},
            "4": {"label": "AVAR", "neuron_class": "AVA", "roi_id": [12], "confidence": 5},
        },
        "tau_vals": [1.0] * N,
        "neuron_categorization": {"1": {"all": []}},
    }
    data.update(changes)
    return data, x


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_wormwideweb_round_trip(tmp_path):
    data, x = www_export()
    (rec,) = load_recordings(write_json(tmp_path / "2022-07-20-01.json", data))
    assert rec.session == "2022-07-20-01"
    np.testing.assert_array_equal(rec.read(), x.T.astype(np.float32))
    assert rec.dt == pytest.approx(0.6) and rec.time is None
    assert list(rec.neuron_ids) == ["AVAL", "roi2", "roi3", "AVAR", "roi5"]  # "RIM?" is uncertain: not an id
    assert list(rec.cell_types) == ["AVA", "unlabeled", "unlabeled", "AVA", "unlabeled"]
    assert rec.provenance["labelled_neurons"] == 2
    v = rec.covariates["velocity"][:, 0]
    assert np.isnan(v[3]) and v[0] == pytest.approx(-1)
    assert "pumping" not in rec.covariates  # all missing
    rev = rec.covariates["reversal"][:, 0]
    assert np.flatnonzero(rev).tolist() == [2, 3, 4, 30, 31]
    assert rec.boundaries.tolist() == [20]  # the second range is a second recording
    (orig,) = load_recordings(tmp_path / "2022-07-20-01.json", trace="trace_original", ids="index")
    np.testing.assert_allclose(orig.read(), x.T * 100 + 500, rtol=1e-6)
    assert orig.neuron_ids[0] == "roi1" and orig.provenance["orientation"] == "time x neurons"
    t = np.cumsum(np.full(40, 0.59))
    (timed,) = load_recordings(write_json(tmp_path / "timed.json", www_export(timestamp_confocal=t.tolist())[0]))
    np.testing.assert_array_equal(timed.time, t)
    assert timed.dt == pytest.approx(0.59)


def test_wormwideweb_folder_matches_neurons_by_identity(tmp_path, run_cli):
    write_json(tmp_path / "2022-07-20-01.json", www_export(seed=1)[0])
    labeled = {"2": {"label": "AVAL", "neuron_class": "AVA"}, "5": {"label": "SMDVR", "neuron_class": "SMDV"}}
    write_json(tmp_path / "2022-07-20-02.json", www_export(seed=2, N=6, uid="2022-07-20-02", labeled=labeled)[0])
    write_json(tmp_path / "summary.json", {"2022-07-20-01": {"num_neurons": 5}})  # not a session: skipped
    a, b = load_recordings(tmp_path)
    named = lambda r: {i for i in r.neuron_ids if not i.startswith("roi")}  # noqa: E731 (roi<k> is per file)
    assert named(a) & named(b) == {"AVAL"}
    assert list(b.neuron_ids).index("AVAL") == 1
    code, out, err = run_cli("data", "info", tmp_path, "--json")
    assert code == 0, err
    assert [(r["session"], r["N"], r["n_cell_types"]) for r in json.loads(out)] == [
        ("2022-07-20-01", 5, 2), ("2022-07-20-02", 6, 3)]


@pytest.mark.parametrize("change, message", [
    ({"trace_array": [[0.1, 0.2], [0.3]], "num_neurons": 2, "labeled": {}},
     r"trace_array is ragged: row 1 has 1 values, row 0 has 2"),
    ({"trace_array": [[0.1, None, 0.3]] * 5},
     r"trace_array contains 5 non-finite value\(s\); first is NaN at frame 1, column 0 \(id 'AVAL'\)"),
    ({"trace_array": [["a", "b"]] * 5}, r"trace_array must hold numbers only"),
    ({"num_neurons": 7}, r"trace_array has 5 rows \(neurons\) but num_neurons is 7"),
    ({"timestamp_confocal": [0.0, 0.6]}, r"timestamp_confocal has 2 entries but the trace has T=40 frames"),
    ({"avg_timestep": "fast"}, r"avg_timestep must be a positive number of minutes, got 'fast'"),
    ({"avg_timestep": None}, r"neither timestamp_confocal nor avg_timestep; give dt"),
    ({"velocity": [0.0] * 39}, r"velocity has 39 frames but the trace has T=40"),
    ({"labeled": {"9": {"label": "AVAL"}}}, r"labeled key '9' is outside the neurons 1..5"),
    ({"reversal_events": [[5, 50]]}, r"reversal_events\[0\] = \[5, 50\] is not a frame range inside 0..40"),
    ({"trace_array": []}, r"trace_array must be a non-empty list"),
])
def test_wormwideweb_bad_input_names_file_and_field(tmp_path, change, message):
    path = write_json(tmp_path / "2022-07-20-01.json", www_export(**change)[0])
    with pytest.raises(DataError, match=r"2022-07-20-01.json: " + message):
        load_recordings(path)


def test_wormwideweb_broken_files(tmp_path, run_cli):
    (tmp_path / "2022-01-01-01.json").write_text("")
    with pytest.raises(DataError, match=r"2022-01-01-01.json: empty file"):
        load_recordings(tmp_path / "2022-01-01-01.json")
    (tmp_path / "2022-01-01-02.json").write_text('{"trace_array": [[1, 2]')
    with pytest.raises(DataError, match=r"2022-01-01-02.json: not valid JSON: .* line 1"):
        load_recordings(tmp_path / "2022-01-01-02.json")
    write_json(tmp_path / "2022-01-01-03.json", [[1, 2]])
    with pytest.raises(DataError, match=r"expected a JSON object with 'trace_array', got a list"):
        load_recordings(tmp_path / "2022-01-01-03.json")
    write_json(tmp_path / "worm.json", {"traces": [[1, 2]]})  # wrong schema, forced format
    code, _, err = run_cli("data", "info", tmp_path / "worm.json", "--format", "wormwideweb")
    assert code == 2 and "worm.json: no 'trace_array' (is this a WormWideWeb export? keys: traces)" in err


# ---------------------------------------------------------------------------- trimmed Flavell HDF5


def trimmed_copy(src, dst, keep, splits, behaviour_full=True):
    """A copy of a real Flavell file whose trace holds only the frames ``keep`` of its timestamps."""
    with h5py.File(src, "r") as f:
        trace = f["gcamp/trace_array"][()]
        time = f["timing/timestamp_confocal"][()]
        velocity = f["behavior/velocity"][()]
        head = f["behavior/head_angle"][()]
    with h5py.File(dst, "w") as g:
        g["gcamp/trace_array"] = trace[keep]
        g["gcamp/idx_splits"] = np.asarray(splits, dtype=np.int64).T  # (2, k), as the lab's Julia exporter writes
        g["timing/timestamp_confocal"] = time
        g["behavior/velocity"] = velocity if behaviour_full else velocity[keep]
        g["behavior/head_angle"] = head[keep]
        g["behavior/reversal_events"] = np.array([[2, 10], [5, 12]])
    return trace, time, velocity


def test_trimmed_flavell_file_loads_the_frames_its_trace_covers(tmp_path, run_cli):
    src = shared("celegans_flavell", "2022-07-26-31-data.h5")
    keep = np.r_[0:300, 400:600]  # two recordings, frames 1..300 and 401..600 of the timestamp vector
    trace, time, velocity = trimmed_copy(src, tmp_path / "2022-07-26-31-data.h5", keep, [(1, 300), (401, 600)])
    (rec,) = load_recordings(tmp_path / "2022-07-26-31-data.h5")
    assert (rec.T, rec.N) == (500, 146)
    np.testing.assert_array_equal(rec.read(), trace[keep].astype(np.float32))
    np.testing.assert_array_equal(rec.time, time[keep])
    np.testing.assert_array_equal(rec.covariates["velocity"][:, 0], velocity[keep].astype(np.float32))
    assert rec.covariates["head_angle"].shape == (500, 1)
    assert rec.boundaries.tolist() == [300]  # windows never join the two recordings
    assert rec.dt == pytest.approx(0.6, abs=0.01)
    assert "trace has 500 of the 800 timestamped frames" in rec.provenance["trimmed"]
    code, out, err = run_cli("data", "info", tmp_path / "2022-07-26-31-data.h5", "--json")
    assert code == 0 and json.loads(out)[0]["segments"] == 2


def test_trimmed_flavell_file_that_cannot_be_reconciled(tmp_path):
    src = shared("celegans_flavell", "2022-07-26-31-data.h5")
    bad = tmp_path / "a-data.h5"
    trimmed_copy(src, bad, np.arange(500), [(1, 300), (301, 450)])
    with pytest.raises(DataError, match=r"a-data.h5: timing/timestamp_confocal has 800 entries but gcamp/trace_array "
                                        r"has T=500 frames; gcamp/idx_splits \(1..300, 301..450\) cover 450 frames"):
        load_recordings(bad)
    trimmed_copy(src, bad, np.arange(500), [(1, 300), (250, 500)])
    with pytest.raises(DataError, match=r"idx_splits ranges .* must be increasing, non-overlapping and 1-based"):
        load_recordings(bad)
    trimmed_copy(src, tmp_path / "b-data.h5", np.arange(800), [(1, 300), (250, 800)])  # untrimmed: not needed
    (rec,) = load_recordings(tmp_path / "b-data.h5")
    assert rec.T == 800 and rec.boundaries.size == 0 and "non-overlapping" in rec.provenance["idx_splits_ignored"]
    with h5py.File(bad, "a") as g:
        del g["gcamp/idx_splits"]
    with pytest.raises(DataError, match=r"has T=500 frames and there is no gcamp/idx_splits"):
        load_recordings(bad)


def test_data_formats_lists_every_source_with_its_files(run_cli):
    code, out, err = run_cli("data", "formats")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(lines) == {"flavell", "nwb", "store", "wormwideweb", "zebrafish_csv"}
    assert "*.nwb" in lines["nwb"] and "*.h5" in lines["flavell"] and "<uid>.json" in lines["wormwideweb"]
