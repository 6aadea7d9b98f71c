"""DistributedDataParallel with 2 gloo processes on the CPU (torchrun)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import latent_config


def test_two_processes_match_one_process_with_the_same_global_batch(tiny_fly, tmp_path):
    cfg = latent_config(tiny_fly, epochs=2, batch_size=64, validation_windows=32)
    cfg["data"]["cross_validation"] = []
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "NEUROCAST_QUIET": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "neurocast", "train", str(path), "--runs-dir",
                             str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "neurocast", "train", str(path), "--runs-dir", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = Path(single.stdout.strip().splitlines()[-1])
    two_lines = [line for line in multi.stdout.strip().splitlines() if line.strip()]
    two = Path(two_lines[-1])
    assert two.parent == tmp_path / "two" / "test_latent"
    # only rank 0 wrote: exactly one run directory
    assert len([p for p in (tmp_path / "two" / "test_latent").iterdir() if p.name != "latest"]) == 1

    def epochs(run):
        return [m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train/total" in m]

    a, b = epochs(one), epochs(two)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert y["train/total"] == pytest.approx(x["train/total"], rel=1e-5)
        assert y["val/loss"] == pytest.approx(x["val/loss"], rel=1e-5)
