import json
import os

from neurocast.runs import RunDir


def test_run_dirs_are_unique_and_complete(tmp_path):
    a = RunDir.create(tmp_path, "exp", "name: exp\n", "abc123", seed=3)
    b = RunDir.create(tmp_path, "exp", "name: exp\n", "abc123", seed=3)  # same second, same config
    assert a.path != b.path and a.path.parent == b.path.parent == tmp_path / "exp"
    name = a.path.name.split("_")
    assert len(name) == 3 and name[2].startswith("abc123")
    for run in (a, b):
        assert run.config_path.read_text() == "name: exp\n"
        assert run.checkpoints.is_dir() and run.figures.is_dir() and run.metrics_path.exists()
        env = json.loads((run.path / "env.json").read_text())
        assert {"versions", "git", "host", "device", "seed"} <= set(env)
        assert env["seed"] == 3 and "torch" in env["versions"] and "dirty" in env["git"]
        assert run.status == "running"
    latest = tmp_path / "exp" / "latest"
    assert latest.is_symlink() and os.readlink(latest) == b.path.name


def test_metrics_log_and_status(tmp_path):
    run = RunDir.create(tmp_path, "e", "x: 1\n", "000000")
    run.log({"step": 1, "loss": 0.5})
    run.log({"step": 2, "loss": float("nan")})
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 3, "lo')  # a line cut by a kill
    assert [m["step"] for m in run.read_metrics()] == [1, 2]
    assert run.read_metrics()[1]["loss"] is None
    run.set_status("complete")
    assert RunDir.open(run.path).status == "complete"


def test_create_at_never_overwrites(tmp_path):
    import pytest

    from neurocast.errors import RunError

    RunDir.create_at(tmp_path / "trial", "a: 1\n")
    with pytest.raises(RunError, match="already exists and is not empty"):
        RunDir.create_at(tmp_path / "trial", "a: 2\n")
    with pytest.raises(RunError, match="not a run directory"):
        RunDir.open(tmp_path)


def test_status_on_error_marks_failed_or_terminated_and_reraises(tmp_path):
    import pytest

    for exc, status in ((ValueError("boom"), "failed"), (KeyboardInterrupt(), "terminated"),
                        (SystemExit(1), "terminated")):
        run = RunDir.create(tmp_path, type(exc).__name__, "x: 1\n", "000000")
        run.set_status("running")
        with pytest.raises(type(exc)), run.status_on_error():
            raise exc
        assert run.status == status
    quiet = RunDir.create(tmp_path, "rank1", "x: 1\n", "000000")
    quiet.set_status("running")
    with pytest.raises(ValueError), quiet.status_on_error(enabled=False):
        raise ValueError("other rank")
    assert quiet.status == "running"
