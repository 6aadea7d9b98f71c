import json
import subprocess
import sys

from conftest import shared


def test_help_output_names_commands(capsys):
    import pytest

    from neurocast.cli import COMMANDS, main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for group, name in COMMANDS:
        assert (group or name) in out


def test_data_info_json_on_real_file(run_cli):
    code, out, err = run_cli("data", "info", shared("celegans_flavell", "2022-07-26-31-data.h5"), "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["session"], row["T"], row["N"]) == ("2022-07-26-31", 800, 146)
    assert abs(row["dt"] - 0.6) < 0.01
    for key in ("stimulus_dims", "n_cell_types", "n_edges"):
        assert key in row and row[key] is None


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "x_activity_matrix.csv"
    bad.write_text("1,2,3\n4,5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "neurocast", "data", "info", str(bad), "--dt", "0.1"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "ragged" in lines[0]
    assert "Traceback" not in proc.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "neurocast", "--debug", "data", "info", str(bad), "--dt", "0.1"],
        capture_output=True, text=True,
    )
    assert "Traceback" in debug.stderr
