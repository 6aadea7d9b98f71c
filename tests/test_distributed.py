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


def test_collectives_go_to_the_backends_device(monkeypatch):
    import torch

    from neurocast import distributed

    assert distributed.collective_device("nccl", 1) == torch.device("cuda", 1)
    assert distributed.collective_device("cpu:gloo,cuda:nccl", 0) == torch.device("cuda", 0)
    assert distributed.collective_device("gloo", 3) == torch.device("cpu")
    assert distributed.backend_devices("cpu:gloo,cuda:nccl") == {"cpu", "cuda"}
    cpu = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="on cpu but the 'nccl' backend takes only cuda"):
        distributed.check_collective(cpu, "nccl")  # what multi-GPU training used to send
    assert distributed.check_collective(cpu, "cpu:gloo,cuda:nccl") is cpu
    # a 2-process run on gloo: one all-reduce of every metric, on the CPU, checked
    sent = []
    monkeypatch.setattr(distributed, "_INFO", distributed.DistInfo(rank=1, world=2, local_rank=1))
    monkeypatch.setattr(distributed.dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda t, *a, **k: sent.append(t) or t.mul_(2))
    assert distributed.mean_over_ranks({"a": 1.5, "b": -2.0}) == {"a": 1.5, "b": -2.0}
    assert len(sent) == 1 and sent[0].device.type == "cpu"
    # an NCCL group whose reduction tensor ended up on the CPU fails loudly before NCCL sees it
    monkeypatch.setattr(distributed.dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(distributed, "collective_device", lambda backend, rank: torch.device("cpu"))
    with pytest.raises(RuntimeError, match="'nccl' backend"):
        distributed.mean_over_ranks({"a": 1.0})
    assert len(sent) == 1


def test_each_process_gathers_only_its_share_of_the_global_batch(tiny_fly, monkeypatch):
    """The same seeded global batch: rank r builds exactly rows [r*B/2, (r+1)*B/2) of it."""
    import torch

    from neurocast import distributed
    from neurocast.config import validate
    from neurocast.pipelines.latent import build
    from neurocast.schema.latent import LatentExperiment

    def first_batch():
        cfg = validate(LatentExperiment, latent_config(tiny_fly, batch_size=8), "test")
        torch.manual_seed(0)
        return next(iter(build(cfg, torch.device("cpu"))[1].batches(0)))

    full = first_batch()
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "_INFO", distributed.DistInfo(rank=rank, world=2, local_rank=rank))
        part = first_batch()
        rows = slice(4 * rank, 4 * rank + 4)
        assert torch.equal(part.x0, full.x0[rows]) and torch.equal(part.targets, full.targets[rows])
        assert list(part.starts) == list(full.starts[rows])


def test_gpu_check_script_runs_its_comparisons(tiny_fly, tiny_rnn, tmp_path):
    """`make gpu-check` on the CPU (its plumbing; the GPU itself is checked by users who have one)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), "--device", "cpu", "--checks", "single,bf16",
                          "--fly", str(tiny_fly), "--rnn", str(tiny_rnn), "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[:-1]] == ["PASS", "PASS"] and lines[-1] == "all checks passed"
    sys.path.insert(0, str(script.parent))
    import gpu_check

    assert gpu_check.compare("x", [1.0, 2.0], [1.0, 2.1], 1e-3) is False  # a real difference fails
    assert gpu_check.compare("x", [1.0, float("nan")], [1.0, 2.0], 1.0) is False
    bad = subprocess.run([sys.executable, str(script), "--device", "cpu", "--checks", "single,fast"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "--checks: unknown fast" in bad.stderr
