import sys
import types

from conftest import latent_config
from neurocast.tasks import load_task_config


def test_tensorboard_by_default_and_wandb_offline_when_enabled(tiny_fly, tmp_path, monkeypatch):
    calls = {"init": None, "log": [], "finish": 0}

    class FakeRun:
        def log(self, data, step=None):
            calls["log"].append((step, dict(data)))

        def finish(self):
            calls["finish"] += 1

    def init(**kwargs):
        calls["init"] = kwargs
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    from neurocast.pipelines.latent import train_latent

    cfg = load_task_config(latent_config(tiny_fly), [
        "--training.epochs", "2", "--runs-dir", str(tmp_path), "--logging.tensorboard", "true",
        "--logging.wandb.enabled", "true", "--logging.wandb.project", "nc-test",
    ])
    run = train_latent(cfg)
    events = list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    init_kwargs = calls["init"]
    assert init_kwargs["mode"] == "offline" and init_kwargs["project"] == "nc-test"
    assert init_kwargs["dir"] == str(run.path) and init_kwargs["config"]["run_dir"] == str(run.path)
    assert [s for s, _ in calls["log"]] == [1, 2]
    keys = set(calls["log"][0][1])
    assert {"train/total", "val/loss", "val/mse_at_5", "cv/motion/loss"} <= keys
    assert calls["finish"] == 1


def test_missing_wandb_is_a_warning_not_a_failure(tiny_fly, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    from neurocast.pipelines.latent import train_latent

    cfg = load_task_config(latent_config(tiny_fly), ["--training.epochs", "1", "--runs-dir", str(tmp_path),
                                                     "--logging.wandb.enabled", "true"])
    run = train_latent(cfg)
    assert run.status == "complete"
    assert "wandb is not installed" in capsys.readouterr().err
