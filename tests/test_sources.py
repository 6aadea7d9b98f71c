
import numpy as np
import pytest

from conftest import shared
from neurocast.data import load_recordings
from neurocast.errors import DataError


def test_flavell_session_matches_file():
    rec = load_recordings(shared("celegans_flavell", "2022-07-26-31-data.h5"))[0]
    assert (rec.T, rec.N) == (800, 146)
    assert rec.dt == pytest.approx(0.6, abs=0.01)
    assert rec.session == "2022-07-26-31"
    assert rec.activity.dtype == np.float32
    assert "velocity" in rec.covariates and rec.covariates["body_angle"].shape == (800, 30)
    assert "pumping" in rec.provenance["dropped_all_nan_behavior"]  # all-NaN in this file


def test_flavell_folder_loads_all_sessions():
    recs = load_recordings(shared("celegans_flavell"))
    assert len(recs) == 6
    assert sorted(r.N for r in recs) == [130, 130, 135, 141, 145, 146]
    assert recs[0].dt == pytest.approx(0.737, abs=0.01)  # 2022-01-16-01 is slower


def test_truncated_hdf5_is_a_clear_error(tmp_path):
    src = shared("celegans_flavell", "2022-07-26-31-data.h5")
    data = src.read_bytes()
    bad = tmp_path / "cut-data.h5"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"cut-data.h5: .*truncated or corrupt"):
        load_recordings(bad)


def test_zebrafish_csv_needs_dt_and_reads_neurons_as_rows():
    folder = shared("zebrafish_tectum")
    with pytest.raises(DataError, match="do not store the frame interval; give dt"):
        load_recordings(folder)
    recs = load_recordings(folder, dt=0.25)
    assert [(r.session, r.T, r.N) for r in recs] == [("zf_20151104-f1", 4245, 114), ("zf_20170215-f3", 5660, 75)]
    assert recs[0].positions.shape == (114, 2)


def test_ragged_csv_names_file_and_row(tmp_path):
    f = tmp_path / "fish_activity_matrix.csv"
    f.write_text("0.1,0.2,0.3\n0.4,0.5\n0.6,0.7,0.8\n")
    with pytest.raises(DataError,
                       match=r"fish_activity_matrix.csv: ragged activity matrix: row 2 has 2 values, row 1 has 3"):
        load_recordings(f, dt=0.1)
    f.write_text("0.1,0.2\n0.4,abc\n")
    with pytest.raises(DataError, match=r"row 2, column 2: 'abc' is not a number"):
        load_recordings(f, dt=0.1)


def test_nan_in_a_file_names_it(tmp_path):
    f = tmp_path / "fish_activity_matrix.csv"
    f.write_text("0.1,0.2,nan\n0.4,0.5,0.6\n")
    with pytest.raises(DataError, match=r"NaN at frame 2, column 0"):
        load_recordings(f, dt=0.1)


def test_unknown_file_and_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no readable session files"):
        load_recordings(tmp_path)
    with pytest.raises(DataError, match="unrecognised data file"):
        load_recordings(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="no such file"):
        load_recordings(tmp_path / "missing.h5")
