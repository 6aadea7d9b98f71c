from typing import Annotated, Literal, Union

import pytest
from pydantic import Field

from neurocast.config import Section, apply_overrides, load_config, read_yaml, to_yaml
from neurocast.errors import ConfigError


class AllMode(Section):
    mode: Literal["all"] = "all"


class StaggeredMode(Section):
    mode: Literal["staggered_random"] = "staggered_random"
    seed: int = 42


class Aug(Section):
    num_neurons: int = Field(0, ge=0)
    loss_coeff: float = Field(1.0, ge=0.0)


class Training(Section):
    time_units: int = Field(1, ge=1, le=1000)
    learning_rate: float = Field(1e-3, gt=0)
    use_tf32: bool = False
    intermediate_loss_steps: list[int] = []
    loss_function: Literal["mse", "huber", "l1"] = "mse"
    acquisition_mode: Annotated[Union[AllMode, StaggeredMode], Field(discriminator="mode")] = AllMode()
    unconnected_to_zero: Aug = Aug()


class Root(Section):
    name: str = "x"
    training: Training = Training()
    cross_validation: list[Aug] = []


def test_overrides_hyphens_underscores_lists_bools_unions():
    cfg = load_config(
        Root,
        {},
        [
            "--training.time-units", "20",
            "--training.learning_rate=1e-4",
            "--training.use-tf32",
            "--training.intermediate-loss-steps", "3", "4",
            "--training.unconnected-to-zero.num-neurons", "100",
            "--training.acquisition-mode.mode", "staggered_random",
            "--training.acquisition-mode.seed", "7",
            "--cross-validation.0.loss-coeff", "0.5",
        ],
    )
    t = cfg.training
    assert (t.time_units, t.learning_rate, t.use_tf32, t.intermediate_loss_steps) == (20, 1e-4, True, [3, 4])
    assert t.unconnected_to_zero.num_neurons == 100
    assert isinstance(t.acquisition_mode, StaggeredMode) and t.acquisition_mode.seed == 7
    assert cfg.cross_validation[0].loss_coeff == 0.5
    assert load_config(Root, {"training": {"use_tf32": True}}, ["--training.no-use-tf32"]).training.use_tf32 is False
    listed = load_config(Root, {}, ["--training.intermediate-loss-steps", "3,4"])
    assert listed.training.intermediate_loss_steps == [3, 4]


def test_unknown_key_names_full_path_and_closest_name(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'training.time_unit' \(did you mean 'time_units'\?\)"):
        load_config(Root, {}, ["--training.time-unit", "3"])
    f = tmp_path / "c.yaml"
    f.write_text("training:\n  unconnected_to_zero:\n    num_neuron: 3\n")
    with pytest.raises(ConfigError,
                       match=r"c.yaml: unknown config key 'training.unconnected_to_zero.num_neuron' \(did you mean "
                             r"'num_neurons'\?\)"):
        load_config(Root, f)
    f.write_text("training:\n  acquisition_mode: {mode: staggered_random, sed: 1}\n")
    with pytest.raises(ConfigError, match=r"'training.acquisition_mode.sed' \(did you mean 'seed'\?\)"):
        load_config(Root, f)


def test_wrong_type_and_range_give_path_and_allowed_range():
    with pytest.raises(ConfigError, match=r"training.time_units: .*valid integer.*'abc'.*allowed: >= 1 and <= 1000"):
        load_config(Root, {}, ["--training.time-units", "abc"])
    with pytest.raises(ConfigError, match=r"training.time_units: .*greater than or equal to 1 \(got 0\)"):
        load_config(Root, {}, ["--training.time-units", "0"])
    with pytest.raises(ConfigError, match=r"training.loss_function: .*'mse', 'huber' or 'l1'.*\(got 'foo'\)"):
        load_config(Root, {}, ["--training.loss-function", "foo"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="takes one value"):
        load_config(Root, {}, ["--training.time-units", "1", "2"])
    with pytest.raises(ConfigError, match="needs a value"):
        load_config(Root, {}, ["--training.time-units"])
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        apply_overrides({}, ["stray"], Root)


def test_yaml_errors_and_base_inheritance(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  time_units: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML \(line"):
        read_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")
    (tmp_path / "base.yaml").write_text("name: parent\ntraining: {time_units: 5, use_tf32: true}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntraining: {time_units: 20}\n")
    cfg = load_config(Root, tmp_path / "child.yaml")
    assert (cfg.name, cfg.training.time_units, cfg.training.use_tf32) == ("parent", 20, True)
    assert "time_units: 20" in to_yaml(cfg)


def test_config_reference_doc_is_current():
    """docs/CONFIG.md is generated from the schemas: regenerate with `neurocast config reference > docs/CONFIG.md`."""
    from pathlib import Path

    from neurocast.config_reference import reference

    doc = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"
    assert doc.read_text() == reference(), "docs/CONFIG.md is stale: run `neurocast config reference > docs/CONFIG.md`"


def test_presets_load_and_show(run_cli):
    from neurocast.presets_index import PRESETS

    presets = [p for p in PRESETS.rglob("*.yaml") if not p.name.startswith("_")]
    assert len(presets) >= 6
    for p in presets:
        code, out, err = run_cli("config", "show", p)
        assert code == 0, (p, err)
        assert "task:" in out


def test_bare_preset_names_resolve_like_paths(run_cli):
    code, out, err = run_cli("config", "show", "latent_20step", "--training.epochs", "3")
    assert code == 0, err
    assert "name: latent_20step" in out and "epochs: 3" in out
    code, out, _ = run_cli("config", "show", "sim/fly_small")
    assert code == 0 and "task: fly_simulation" in out
    code, _, err = run_cli("config", "show", "latent_20stepp")
    assert code == 2 and "neither here nor a preset" in err


def test_derived_quantities_of_the_latent_training_config():
    from neurocast.schema.latent import LatentTraining

    t = LatentTraining(time_units=5, evolve_multiple_steps=3, intermediate_loss_steps=[2, 4])
    assert (t.window, t.loss_multiples, t.loss_steps) == (15, [5, 10, 15], [2, 4, 5, 10, 15])
    assert "window" not in t.model_dump()  # derived, never a key of a config file
