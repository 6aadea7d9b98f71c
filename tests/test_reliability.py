"""Nothing lost, nothing corrupted: one writer per run and per store, verified stores,
sweeps that resume every task, and one-line errors for environment failures.

The slow fault scenarios (random SIGKILLs, concurrent simulations, many damaged stores)
are in benchmarks/reliability.py; these are the fast checks of each hole.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY_RNN, forecast_config, latent_config
from neurocast.errors import DataError
from neurocast.tasks import load_task_config

# a live process that owns a run (as a training process does); a neurocast without run
# ownership has nothing to take, and then the tests below show the second writer getting in
HOLD_RUN = ("import sys, time\nfrom neurocast.runs import RunDir\nrun = RunDir(sys.argv[1])\n"
            "getattr(run, 'claim', lambda: None)()\nprint('held', flush=True)\ntime.sleep(300)\n")


def hold(code: str, *args) -> subprocess.Popen:
    """A live process holding a lock (prints 'held ...' once it has it; the rest in proc.said)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("held"):
        proc.kill()
        raise AssertionError(f"holder did not start: {line} {proc.stderr.read()}")
    proc.said = line[4:].strip()
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def _latent_cfg(tiny_fly, tmp_path, **training):
    cfg = latent_config(tiny_fly, **{"epochs": 2, "validation_windows": 16, **training})
    cfg["training"].update(time_units=2, evolve_multiple_steps=1)
    cfg["data"]["split"].update(train_end=2000, validation_start=8000, validation_end=8600)
    cfg["data"]["cross_validation"] = []
    cfg["runs_dir"] = str(tmp_path / "runs")
    return cfg


def _kill_after(monkeypatch, epoch: int, name: str = "latest.pt", before: bool = False):
    """Make the (in-process) run die right after (or just before) writing checkpoint ``name`` of ``epoch``."""
    from neurocast.train.loop import Trainer

    real = Trainer.save

    def dying(self, n):
        if before and n == name and self.epoch == epoch:
            raise SystemExit("killed")
        path = real(self, n)
        if n == name and self.epoch == epoch:
            raise SystemExit("killed")
        return path

    monkeypatch.setattr(Trainer, "save", dying)
    return lambda: monkeypatch.setattr(Trainer, "save", real)


@pytest.fixture(scope="module")
def killed_latent(tiny_fly, tmp_path_factory):
    """A latent run (2 epochs) killed right after its epoch-1 checkpoint; tests copy it."""
    from neurocast.pipelines.latent import train_latent

    tmp = tmp_path_factory.mktemp("killed")
    with pytest.MonkeyPatch.context() as mp:
        _kill_after(mp, 1)
        with pytest.raises(SystemExit):
            train_latent(load_task_config(_latent_cfg(tiny_fly, tmp)))
    return next((tmp / "runs" / "test_latent").glob("2*"))


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def epochs(run: Path) -> list[int]:
    return [m["epoch"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train/total" in m]


# ---------------------------------------------------------------------------- one writer per run


def test_second_writer_fails_naming_the_holder_then_resumes_once_it_is_gone(killed_latent, tmp_path, run_cli):
    run = copy_run(killed_latent, tmp_path / "run")
    before = (run / "metrics.jsonl").read_bytes()
    holder = hold(HOLD_RUN, run)
    (run / "checkpoints" / ".best.pt.tmp-424242").write_bytes(b"half a checkpoint")  # a killed writer's leftover
    try:
        code, out, err = run_cli("train", "--resume", run)
    finally:
        stop(holder)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"pid {holder.pid}" in err and str(run) in err
    assert (run / "metrics.jsonl").read_bytes() == before  # the second writer wrote nothing
    code, out, err = run_cli("train", "--resume", run)  # the holder died: its lock is gone
    assert code == 0, err
    assert epochs(run) == [1, 2] and (run / "status").read_text().strip() == "complete"
    assert not list((run / "checkpoints").glob(".*.tmp-*"))  # leftovers removed by the next writer
    assert not (run / ".lock").exists()


def test_a_lock_kept_by_an_orphan_of_a_dead_process_is_taken_over(tmp_path):
    from neurocast.locks import FileLock, holder

    code = ("import os, sys, time\nfrom neurocast.locks import FileLock\n"
            "FileLock(sys.argv[1], 'x').acquire()\n"
            "child = os.fork()\n"
            "if child == 0:\n    time.sleep(60)\n    os._exit(0)\n"  # the child inherits the flock
            "print('held', child, flush=True)\nos._exit(0)\n")
    lock_file = tmp_path / ".lock"
    proc = hold(code, lock_file)
    orphan = int(proc.said)
    proc.wait()  # the recorded holder is dead; its orphan still has the OS lock
    try:
        assert holder(lock_file) is None  # a dead holder does not count
        lock = FileLock(lock_file, "thing").acquire()
        assert lock.took_over is not None and lock.took_over["pid"] == proc.pid
        lock.release()
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_without_os_locks_the_recorded_holder_decides(tmp_path, monkeypatch):
    """File systems without flock (some network mounts): a live recorded holder wins, a dead one is replaced."""
    import socket

    import neurocast.locks as locks
    from neurocast.errors import LockedError

    monkeypatch.setattr(locks, "_try_flock", lambda fd: None)
    lock_file = tmp_path / ".lock"
    lock_file.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))  # alive
    with pytest.raises(LockedError, match=f"pid {os.getppid()}"):
        locks.FileLock(lock_file, "thing").acquire(wait=0.1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_file.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    lock = locks.FileLock(lock_file, "thing").acquire(wait=0.1)
    assert lock.took_over["pid"] == int(dead.stdout)
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    lock.release()


# ---------------------------------------------------------------------------- sweeps


def _sweep_args(exp: Path, tmp_path: Path, *extra):
    return ["sweep", exp, "--grid", "training.learning_rate=0.002", "--runs-dir", tmp_path / "runs", "--name", "s",
            *extra]


def _trial_path(run_cli, args) -> Path:
    code, out, err = run_cli(*args, "--dry-run")
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    (trial,) = json.loads((folder / "sweep.json").read_text())["trials"]
    return folder / "trials" / trial["name"]


def test_sweep_reports_a_trial_held_by_a_live_process_as_running_and_never_restarts_it(
        killed_latent, tiny_fly, tmp_path, run_cli):
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(_latent_cfg(tiny_fly, tmp_path)))
    args = _sweep_args(exp, tmp_path)
    trial = _trial_path(run_cli, args)
    copy_run(killed_latent, trial)  # an interrupted trial whose process still runs
    before = (trial / "metrics.jsonl").read_bytes()
    holder = hold(HOLD_RUN, trial)
    try:
        code, out, err = run_cli(*args, "--dry-run")
        assert code == 0 and "running" in out and f"pid {holder.pid}" in out
        code, out, err = run_cli(*args)
    finally:
        stop(holder)
    assert code == 1 and "still running in another process" in err
    assert (trial / "metrics.jsonl").read_bytes() == before
    assert (not list(trial.parent.glob("*.failed-*"))
            and not (trial.parent.parent / "logs" / f"{trial.name}.log").exists())


def test_sweep_resumes_an_interrupted_forecasting_trial_instead_of_restarting_it(tiny_rnn, tmp_path, run_cli,
                                                                                  monkeypatch):
    from neurocast.pipelines.forecast import train_forecast

    cfg = forecast_config(tiny_rnn, max_steps=8, val_every=4, val_windows=8)
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(cfg))
    args = _sweep_args(exp, tmp_path)
    trial = _trial_path(run_cli, args)
    restore = _kill_after(monkeypatch, 1)  # the trial dies after its first checkpoint (step 10)
    with pytest.raises(SystemExit):
        train_forecast(load_task_config(exp, ["--training.learning_rate", "0.002"]), trial)
    restore()
    seed = trial / "seeds" / "0"
    first = (seed / "metrics.jsonl").read_text().splitlines()[0]
    code, out, err = run_cli(*args, "--dry-run")
    assert code == 0 and "resume" in out and "--resume" in out
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert epochs(seed) == [1, 2] and (seed / "metrics.jsonl").read_text().splitlines()[0] == first
    assert (trial / "status").read_text().strip() == "complete" and not list(trial.parent.glob("*.failed-*"))


def test_sweep_seeds_must_be_at_least_one(tiny_fly, tmp_path, run_cli):
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(_latent_cfg(tiny_fly, tmp_path)))
    code, out, err = run_cli(*_sweep_args(exp, tmp_path, "--seeds", "0", "--dry-run"))
    assert code == 2 and "--seeds must be >= 1" in err


def test_a_comparison_killed_during_its_second_method_resumes_it_and_keeps_the_first(tiny_rnn, tmp_path, run_cli,
                                                                                        monkeypatch):
    from neurocast.pipelines.ttt_compare import train_ttt_compare
    from neurocast.train.loop import Trainer

    cfg = forecast_config(tiny_rnn, max_steps=4, val_every=2, val_windows=8,
                          meta={"support_windows": 8, "query_windows": 8, "meta_batch_size": 2, "inner_steps": 1})
    cfg.update(task="ttt_compare", name="cmp", runs_dir=str(tmp_path), methods=["standard", "fomaml"])
    cfg["eval"]["adaptation"].update(steps=2, eval_every=1, long_steps=2, query_windows=8, batch_size=8)
    cfg["data"]["held_out_sessions"] = ["rnn/session_04"]
    real = Trainer.save

    def dying(self, n):
        path = real(self, n)
        if n == "latest.pt" and self.epoch == 1 and "fomaml" in str(self.run.path):
            raise SystemExit("killed")
        return path

    monkeypatch.setattr(Trainer, "save", dying)
    with pytest.raises(SystemExit):
        train_ttt_compare(load_task_config(cfg))
    monkeypatch.setattr(Trainer, "save", real)
    run = next(tmp_path.glob("cmp/2*"))
    standard = run / "methods" / "standard" / "seeds" / "0" / "summary.json"
    done = standard.stat().st_mtime_ns
    first = (run / "methods" / "fomaml" / "seeds" / "0" / "metrics.jsonl").read_text().splitlines()[0]
    code, out, err = run_cli("train", "--resume", run)
    assert code == 0, err
    assert standard.stat().st_mtime_ns == done  # the finished method was not trained again
    fomaml = run / "methods" / "fomaml" / "seeds" / "0"
    assert epochs(fomaml) == [1, 2] and (fomaml / "metrics.jsonl").read_text().splitlines()[0] == first
    assert set(json.loads((run / "summary.json").read_text())["methods"]) == {"standard", "fomaml"}


# ---------------------------------------------------------------------------- verified stores


def _store(path: Path, rng) -> np.ndarray:
    from neurocast.data import RecordingWriter

    x = rng.normal(size=(3000, 12)).astype(np.float32)
    with RecordingWriter(path, n_neurons=12, dt=0.1, chunk_steps=512) as w:
        w.append({"activity": x})
    return x


def test_a_missing_emptied_or_changed_chunk_is_an_error_naming_store_array_and_frames(tmp_path, rng, run_cli):
    from neurocast.data import open_recording

    for damage in ("delete", "empty", "flip"):
        path = tmp_path / f"{damage}.zarr"
        _store(path, rng)
        chunk = path / "channels" / "activity" / "c" / "2" / "0"
        if damage == "delete":
            chunk.unlink()
        elif damage == "empty":
            chunk.write_bytes(b"")
        else:
            data = bytearray(chunk.read_bytes())
            data[len(data) // 2] ^= 0xFF
            chunk.write_bytes(bytes(data))
        with pytest.raises(DataError,
                           match=rf"store {path} is damaged: array 'channels/activity' frames \[1024, 1536\)"):
            open_recording(path).read()  # missing/emptied: on opening; changed bytes: when read
        code, out, err = run_cli("data", "verify", path)
        assert code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err
    good = tmp_path / "good.zarr"
    x = _store(good, rng)
    assert np.array_equal(open_recording(good).read(), x)
    code, out, err = run_cli("data", "verify", good)
    assert code == 0 and "ok" in out
    data = bytearray((good / "channels/activity/c/1/0").read_bytes())
    data[100] ^= 1
    st = (good / "channels/activity/c/1/0").stat()
    (good / "channels/activity/c/1/0").write_bytes(bytes(data))
    os.utime(good / "channels/activity/c/1/0", ns=(st.st_atime_ns, st.st_mtime_ns))  # damage that hides its time
    with pytest.raises(DataError, match=r"frames \[512, 1024\): .* does not match its checksum"):
        open_recording(good).read(0, 600)
    assert np.array_equal(open_recording(good).read(1024, 3000), x[1024:])  # the intact chunks still read
    code, out, err = run_cli("data", "verify", tmp_path)
    assert code == 2 and "does not match its checksum" in out and "4 of 4 stores" in err


def test_partial_folders_of_killed_writers_are_removed_and_a_second_writer_is_refused(tmp_path, rng):
    from neurocast.data import RecordingWriter

    target = tmp_path / "s.zarr"
    leftover = tmp_path / "s.zarr.partial-424242"
    (leftover / "channels").mkdir(parents=True)
    (leftover / "zarr.json").write_text("{}")
    _store(target, rng)
    assert not leftover.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    from neurocast.errors import LockedError

    code = ("import sys, numpy as np\nfrom neurocast.data import RecordingWriter\n"
            "w = RecordingWriter(sys.argv[1], n_neurons=3, dt=0.1)\nprint('held', flush=True)\n"
            "import time; time.sleep(300)\n")
    holder = hold(code, tmp_path / "other.zarr")
    try:
        with pytest.raises(LockedError, match=rf"store {tmp_path / 'other.zarr'} is in use by pid {holder.pid}"):
            RecordingWriter(tmp_path / "other.zarr", n_neurons=3, dt=0.1)
    finally:
        stop(holder)


def test_simulate_redoes_a_damaged_dataset_instead_of_reusing_it(tmp_path, run_cli):
    from neurocast.data import load_recordings
    from neurocast.sim import simulate

    cfg = load_task_config(TINY_RNN)
    folder = simulate(cfg, tmp_path / "ds")
    truth = {r.session: r.read() for r in load_recordings(folder)}
    chunk = next((folder / "session_01.zarr" / "channels").rglob("c/0/0"))
    chunk.unlink()  # a deleted chunk: reusing it would train on zeros
    assert simulate(cfg, tmp_path / "ds") == folder
    assert all(np.array_equal(r.read(), truth[r.session]) for r in load_recordings(folder))
    # damage that keeps its modification time: only checksums see it, and `neurocast simulate` checks them
    chunk = next((folder / "session_02.zarr" / "channels").rglob("c/0/0"))
    st = chunk.stat()
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    cfg_file = tmp_path / "sim.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY_RNN))
    code, out, err = run_cli("simulate", cfg_file, "--output", folder)
    assert code == 0 and "session_02.zarr cannot be reused" in err and "checksum" in err
    assert all(np.array_equal(r.read(), truth[r.session]) for r in load_recordings(folder))


# ---------------------------------------------------------------------------- environment failures


def test_disk_full_is_one_line_naming_the_checkpoint_and_resume_uses_the_checkpoints_that_exist(
        tiny_fly, tmp_path, run_cli, monkeypatch):
    from neurocast.runs import RunDir

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_latent_cfg(tiny_fly, tmp_path)))
    real = RunDir.create_at.__func__

    def full_disk(cls, path, *a, **k):  # writes of latest.pt go to /dev/full: ENOSPC, as on a full disk
        run = real(cls, path, *a, **k)
        (run.checkpoints / f".latest.pt.tmp-{os.getpid()}").symlink_to("/dev/full")
        return run

    monkeypatch.setattr(RunDir, "create_at", classmethod(full_disk))
    code, out, err = run_cli("train", cfg)
    monkeypatch.undo()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot write checkpoint" in err and "latest.pt: no space left on device" in err
    assert "the run keeps best.pt" in err and "--resume" in err
    run = next((tmp_path / "runs" / "test_latent").glob("2*"))
    assert (run / "status").read_text().strip() == "failed" and (run / "checkpoints" / "best.pt").exists()
    code, out, err = run_cli("train", "--resume", run)  # best.pt (epoch 1) is a complete checkpoint
    assert code == 0, err
    assert epochs(run) == [1, 2] and (run / "status").read_text().strip() == "complete"
    empty = copy_run(run, tmp_path / "empty")
    for p in (empty / "checkpoints").iterdir():
        p.write_bytes(b"")  # every checkpoint destroyed
    (empty / "status").write_text("failed\n")
    code, out, err = run_cli("train", "--resume", empty)
    assert code == 2 and "no usable checkpoint" in err and "latest.pt" in err and "best.pt" in err


def test_read_only_output_folder_is_exit_2_naming_it(tiny_fly, tmp_path, run_cli, monkeypatch):
    import errno

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_latent_cfg(tiny_fly, tmp_path)))
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
    else:  # root ignores permissions: make the folder refuse like a read-only mount
        real_mkdir = Path.mkdir

        def refuse(self, *a, **k):
            if str(self).startswith(str(locked)):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real_mkdir(self, *a, **k)

        monkeypatch.setattr(Path, "mkdir", refuse)
    code, out, err = run_cli("train", cfg, "--runs-dir", locked)
    locked.chmod(0o755)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(locked) in err, err
    assert "read-only file system" in err or "permission denied" in err


def test_damaged_files_are_named_by_resume_and_skipped_by_summarize(killed_latent, tmp_path, run_cli):
    good = copy_run(killed_latent, tmp_path / "runs" / "good")
    bad_summary = copy_run(killed_latent, tmp_path / "runs" / "bad_summary")
    bad_config = copy_run(killed_latent, tmp_path / "runs" / "bad_config")
    (good / "summary.json").write_text(json.dumps({"task": "latent", "best_val_loss": 1.0}))
    (bad_summary / "summary.json").write_text('{"task": "lat')
    (bad_config / "config.yaml").write_text("training: [unclosed\n")
    code, out, err = run_cli("summarize", tmp_path / "runs", "--json")
    assert code == 0, err
    assert [r["run"] for r in json.loads(out)["runs"]] == ["good"]
    assert f"skipping {bad_summary}" in err and f"skipping {bad_config}" in err
    code, out, err = run_cli("train", "--resume", bad_config)
    assert code == 2 and f"{bad_config / 'config.yaml'} is damaged" in err and "line" in err


# ---------------------------------------------------------------------------- small fixes


def test_tensorboard_drops_the_killed_epoch_on_resume(tiny_fly, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from neurocast.pipelines.latent import resume_latent, train_latent

    cfg = _latent_cfg(tiny_fly, tmp_path, epochs=3)
    cfg["logging"]["tensorboard"] = True
    restore = _kill_after(monkeypatch, 2, "latest.pt", before=True)  # epoch 2 is logged, never checkpointed
    with pytest.raises(SystemExit):
        train_latent(load_task_config(cfg))
    restore()
    run = next((tmp_path / "runs" / "test_latent").glob("2*"))
    resume_latent(run)
    ea = EventAccumulator(str(run / "tensorboard"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/total")] == [1, 2, 3]


def test_broken_preset_is_listed_with_its_error(tmp_path, run_cli):
    (tmp_path / "broken.yaml").write_text("task: latent\ntraining: [1, 2\n")
    code, out, err = run_cli("experiments", "--presets-dir", tmp_path)
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("broken"))
    assert "invalid YAML" in line and "line 3" in line


def test_dictionary_key_overrides_normalise_hyphens_and_refuse_new_entries():
    from neurocast.errors import ConfigError

    data = {"task": "fly_simulation", "name": "x",
            "recordings": {"train": {"duration_s": 10.0}, "cv_natural": {"duration_s": 3.0}}}
    cfg = load_task_config(data, ["--recordings.cv-natural.duration-s", "5"])
    assert set(cfg.recordings) == {"train", "cv_natural"} and cfg.recordings["cv_natural"].duration_s == 5
    with pytest.raises(ConfigError, match=r"recordings has no entry 'cv_nat' \(did you mean 'cv_natural'\?\)"):
        load_task_config(data, ["--recordings.cv_nat.duration-s", "5"])
    lat = load_task_config({"task": "latent", "name": "l", "data": {"path": "x"}},
                           ["--training.optimizer-kwargs.weight-decay", "0.1"])
    assert lat.training.optimizer_kwargs == {"weight_decay": 0.1}  # free-form dictionaries take new keys


def test_storage_errors_from_checkpoint_writes_are_one_line(tmp_path):
    import torch

    from neurocast.checkpoints import save_checkpoint
    from neurocast.errors import StorageError

    save_checkpoint(tmp_path / "a.pt", {"w": torch.zeros(3)})
    (tmp_path / f".a.pt.tmp-{os.getpid()}").symlink_to("/dev/full")
    with pytest.raises(StorageError, match=rf"cannot write checkpoint {tmp_path / 'a.pt'}: no space left on device"):
        save_checkpoint(tmp_path / "a.pt", {"w": torch.ones(100_000)})
    assert torch.equal(torch.load(tmp_path / "a.pt")["w"], torch.zeros(3))  # the previous one stays


if not hasattr(signal, "SIGKILL"):  # pragma: no cover
    pytest.skip("POSIX signals needed", allow_module_level=True)
