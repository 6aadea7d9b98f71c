import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from neurocast.checkpoints import (
    capture_rng_state,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint,
)
from neurocast.errors import CheckpointError


def test_round_trip_with_rng_states(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    rng = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    path = save_checkpoint(tmp_path / "c.pt",
                           {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng, "epoch": 4,
                            "config": {"a": 1}})
    state = load_checkpoint(path)
    restore_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    fresh = torch.nn.Linear(3, 2)
    load_model_state(fresh, state["model"], str(path))
    assert torch.equal(fresh.weight, model.weight) and state["epoch"] == 4 and state["config"] == {"a": 1}


def test_truncated_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"model": torch.nn.Linear(50, 50).state_dict()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="c.pt is truncated or corrupt"):
        load_checkpoint(path)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_mismatched_model_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"model": torch.nn.Linear(3, 2).state_dict()})
    with pytest.raises(CheckpointError, match=r"does not match the model: 2 shape mismatch\(es\) "
                                              r"e.g. weight \(2, 3\) vs model \(4, 3\)"):
        load_model_state(torch.nn.Linear(3, 4), load_checkpoint(path)["model"], str(path))
    with pytest.raises(CheckpointError, match="missing 2 key"):
        load_model_state(torch.nn.Sequential(torch.nn.Linear(3, 2)), load_checkpoint(path)["model"], str(path))


def test_kill_during_write_keeps_previous_checkpoint(tmp_path):
    """A writer killed (SIGKILL) in the middle of torch.save leaves the old file intact."""
    target = tmp_path / "latest.pt"
    save_checkpoint(target, {"model": {"w": torch.zeros(3)}, "epoch": 1})
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        import neurocast.checkpoints as ck
        real_save = torch.save
        def slow_save(obj, f, *a, **k):
            class Slow:
                def __init__(s, f): s.f = f
                def write(s, b):
                    n = s.f.write(b); s.f.flush(); print("writing", flush=True); time.sleep(0.05); return n
                def flush(s): s.f.flush()
                def fileno(s): return s.f.fileno()
            return real_save(obj, Slow(f), *a, **k)
        torch.save = slow_save
        ck.save_checkpoint({str(target)!r}, {{"model": {{"w": torch.ones(2_000_000)}}, "epoch": 2}})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"  # mid-write now
    time.sleep(0.2)
    proc.kill()
    proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "latest.pt"]
    assert leftovers and all(".tmp-" in n for n in leftovers)  # the partial temp file, never the target
    state = load_checkpoint(target)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.zeros(3))
