"""The task registry names real functions and schemas; preset names resolve one way everywhere."""

from __future__ import annotations

import typing

import pytest

from neurocast.errors import ConfigError
from neurocast.tasks import TASKS, TaskSpec, task_schema


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_entry_of_a_task_spec_resolves(name):
    spec = TASKS[name]
    assert spec.name == name
    schema = task_schema(name)
    assert typing.get_args(schema.model_fields["task"].annotation) == (name,)  # the schema's task key is the name
    for what in ("train", "resume", "analyze", "simulate", "run", "summary_row"):
        if getattr(spec, what) is not None:
            assert callable(spec.get(what)), (name, what)
    if spec.train is not None:  # what a sweep sets per seed is a key of the schema
        assert spec.seed_key is not None and spec.resume is not None
        section, key = spec.seed_key.split(".")
        assert key in schema.model_fields[section].annotation.model_fields


def test_a_missing_step_is_a_one_line_error():
    with pytest.raises(ConfigError, match="task 'x' has no train step"):
        TaskSpec("x", "neurocast.schema.sweep:SweepConfig").get("train")


def test_train_and_run_resolve_a_preset_name_the_same_way(tmp_path, monkeypatch):
    """A user preset named like a built-in one wins for every command and every spelling of the name."""
    from neurocast.presets_index import PRESETS, find, resolve_config_path

    mine = tmp_path / "mine"
    (mine / "sim").mkdir(parents=True)
    (mine / "latent_20step.yaml").write_text("task: latent\nname: mine\n")
    (mine / "sim" / "fly_small.yaml").write_text("task: fly_simulation\nname: mine\n")
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    monkeypatch.setenv("NEUROCAST_PRESETS", str(mine))
    for name in ("latent_20step", "latent_20step.yaml", "configs/latent_20step.yaml"):
        assert resolve_config_path(name) == find(name) == mine / "latent_20step.yaml", name
    for name in ("sim/fly_small", "configs/sim/fly_small.yaml"):
        assert resolve_config_path(name) == find(name) == mine / "sim" / "fly_small.yaml", name
    assert resolve_config_path("latent_5step") == find("latent_5step") == PRESETS / "latent_5step.yaml"
    (tmp_path / "latent_20step.yaml").write_text("task: latent\n")  # a file as given comes first for configs
    assert resolve_config_path("latent_20step.yaml").resolve() == tmp_path / "latent_20step.yaml"


def test_run_dir_new_load_config_and_best_checkpoint(tmp_path):
    from neurocast.runs import RunDir
    from neurocast.schema.sweep import SweepConfig
    from neurocast.tasks import load_task_config

    cfg = load_task_config({"task": "sweep", "name": "s", "experiment": "latent_20step", "seeds": 2,
                            "runs_dir": str(tmp_path / "runs")})
    here = RunDir.new(None, cfg, seed=0)  # a new directory under runs_dir/name
    assert here.path.parent == tmp_path / "runs" / "s" and here.status == "running"
    there = RunDir.new(tmp_path / "exact", cfg)  # exactly this one
    assert there.path == tmp_path / "exact"
    loaded = RunDir.open(there.path).load_config()
    assert isinstance(loaded, SweepConfig) and loaded == cfg
    assert there.best_checkpoint() == there.checkpoints / "final.pt"
    assert there.best_checkpoint("latest.pt") == there.checkpoints / "latest.pt"
    (there.checkpoints / "best.pt").write_bytes(b"x")
    assert there.best_checkpoint() == there.checkpoints / "best.pt"
    here.release()
    there.release()
