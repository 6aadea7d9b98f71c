import json

import numpy as np
import pytest
import torch

from conftest import latent_config
from neurocast.data.acquisition import Acquisition
from neurocast.data.connectome import Connectome
from neurocast.data.latent_windows import Batch, LatentWindows
from neurocast.errors import ConfigError, TrainingError
from neurocast.models.latent import LatentModel
from neurocast.schema.latent import LatentModelConfig
from neurocast.tasks import load_task_config
from neurocast.train.latent_objective import Augmentation, active_multiples, augmentation_loss, unroll_losses


def tiny_model(zero_init=True, l1=0.0):
    cfg = LatentModelConfig(
        latent_dims=3,
        encoder={"num_hidden_units": 5, "l1_reg_loss": l1},
        decoder={"num_hidden_units": 5},
        evolver={"num_hidden_units": 4, "zero_init": zero_init},
        stimulus_encoder={"num_hidden_units": 4, "num_output_dims": 2},
    )
    torch.manual_seed(0)
    return LatentModel(6, 2, cfg)


def test_unrolled_objective_equals_hand_written_loop():
    model = tiny_model(zero_init=False, l1=0.1)
    g = torch.Generator().manual_seed(1)
    b, tu, ems = 4, 2, 2
    x0 = torch.randn(b, 6, generator=g)
    stim = torch.randn(b, tu * ems, 2, generator=g)
    steps = [1, 2, 4]  # intermediate step 1, multiples 2 and 4
    targets = torch.randn(b, len(steps), 6, generator=g)
    batch = Batch(x0, stim, steps, targets, None, x0, None, np.zeros(b))
    got = unroll_losses(model, batch, "mse", max_step=4, time_units=tu, staggered=False)

    # by hand
    z = model.encoder(x0)
    recon = ((model.decoder(z) - x0) ** 2).mean()
    evolve = 0.0
    for k in range(1, 5):
        s = model.stimulus_encoder(stim[:, k - 1])
        z = z + model.evolver(torch.cat([z, s], dim=1))
        if k in steps:
            evolve = evolve + ((model.decoder(z) - targets[:, steps.index(k)]) ** 2).mean()
    reg = 0.1 * sum(p.abs().mean() for p in model.encoder.parameters())
    torch.testing.assert_close(got["recon"], recon)
    torch.testing.assert_close(got["evolve"], evolve)
    torch.testing.assert_close(got["reg"], reg)
    torch.testing.assert_close(got["total"], recon + evolve + reg)
    # with max_step=2 (ems warm-up) only the first multiple (and the intermediate step) count
    early = unroll_losses(model, batch, "mse", max_step=2, time_units=tu, staggered=False)
    assert early["evolve"] < got["evolve"]
    assert [active_multiples(5, 10, e) for e in (0, 2, 5, 9, 10, 20)] == [1, 1, 3, 4, 5, 5]


def test_zero_init_evolver_is_identity_at_start():
    model = tiny_model(zero_init=True)
    z, s = torch.randn(7, 3), torch.randn(7, 2)
    assert torch.equal(model.evolve(z, model.encode_stimulus(s)), z)
    assert not torch.equal(tiny_model(zero_init=False).evolve(z, model.encode_stimulus(s)), z)


def test_staggered_phases_are_per_neuron_and_seeded():
    a = Acquisition("staggered_random", 5, 200, seed=1)
    b = Acquisition("staggered_random", 5, 200, seed=1)
    c = Acquisition("staggered_random", 5, 200, seed=2)
    assert np.array_equal(a.phases, b.phases) and not np.array_equal(a.phases, c.phases)
    assert set(a.phases.tolist()) == set(range(5))
    m = a.mask(0, 50)
    assert np.all(m.sum(0) == 10)  # every neuron observed once per interval
    assert not np.all(m[0] == m[0][0])  # neurons observed at different frames
    # interpolation reads only observed samples: NaN elsewhere does not leak
    x = np.tile(np.arange(50, dtype=np.float32)[:, None], (1, 200))
    out = a.interpolate(np.where(m, x, np.nan), 0)
    assert np.isfinite(out).all()
    inner = slice(5, 45)
    np.testing.assert_allclose(out[inner], x[inner], atol=1e-5)  # linear data is recovered


def test_augmentation_zeroes_exactly_the_non_presynaptic_set():
    rng = np.random.default_rng(0)
    N = 40
    pre, post = rng.integers(0, N, 150), rng.integers(0, N, 150)
    con = Connectome.from_edges(pre, post, np.ones(150), N)
    aug = Augmentation(con, num_neurons=3, loss_coeff=0.5, seed=0)
    sel, keep = aug.sample(N)
    expected = set(sel.tolist()) | {int(p) for p, q in zip(pre, post) if q in set(sel.tolist())}
    assert set(np.flatnonzero(keep).tolist()) == expected

    # the model sees exactly that input
    model = LatentModel(N, None, LatentModelConfig(latent_dims=4, use_stimulus=False))
    seen = []
    real = model.encode
    model.encode = lambda x: (seen.append(x.detach().clone()), real(x))[1]
    x0 = torch.randn(5, N) + 3.0  # no exact zeros in the data
    batch = Batch(x0, None, [1], torch.zeros(5, 1, N), None, x0, None, np.zeros(5))
    aug.rng = np.random.default_rng(123)
    z1 = model.evolve(real(x0), None)
    augmentation_loss(model, batch, z1, None, "mse", aug)
    aug.rng = np.random.default_rng(123)
    sel, keep = aug.sample(N)
    x_aug = seen[-1]
    assert torch.equal(x_aug[:, torch.as_tensor(keep)], x0[:, torch.as_tensor(keep)])
    assert torch.all(x_aug[:, torch.as_tensor(~keep)] == 0)


def test_augmentation_needs_a_connectome():
    with pytest.raises(ConfigError, match="needs a connectome"):
        Augmentation(None, num_neurons=10, loss_coeff=0.1, seed=0)


def test_seed_command_lines_and_invalid_combinations(tiny_fly):
    base = latent_config(tiny_fly)
    cfg = load_task_config(base, [
        "--training.unconnected-to-zero.num-neurons", "100",
        "--training.unconnected_to_zero.loss_coeff", "0.1",
        "--training.evolve-multiple-steps", "5",
        "--training.time-units", "5",
        "--training.intermediate-loss-steps", "3",
        "--training.grad-clip-max-norm", "0",
        "--training.reconstruction-warmup-epochs", "10",
        "--training.learning-rate", "1e-5",
    ])
    t = cfg.training
    assert (t.unconnected_to_zero.num_neurons, t.evolve_multiple_steps, t.intermediate_loss_steps) == (100, 5, [3])
    cfg = load_task_config(base, ["--training.acquisition-mode.mode", "staggered_random",
                                  "--training.acquisition-mode.seed", "42"])
    assert cfg.training.acquisition_mode.seed == 42
    with pytest.raises(ConfigError, match="intermediate_loss_steps need every frame observed"):
        load_task_config(base, ["--training.acquisition-mode.mode", "time_aligned",
                                "--training.intermediate-loss-steps", "3"])
    with pytest.raises(ConfigError, match="unconnected_to_zero is not defined for staggered_random"):
        load_task_config(base, ["--training.acquisition-mode.mode", "staggered_random",
                                "--training.unconnected-to-zero.num-neurons", "10"])
    with pytest.raises(ConfigError, match="strictly between 0 and time_units=5"):
        load_task_config(base, ["--training.intermediate-loss-steps", "5"])


def _task(tiny_fly, overrides=()):
    from neurocast.pipelines.latent import build

    cfg = load_task_config(latent_config(tiny_fly), list(overrides))
    _, task = build(cfg, torch.device("cpu"))
    return cfg, task


def _trainer(cfg, task, run=None):
    from neurocast.train.loop import Trainer, build_optimizer

    opt = build_optimizer("Adam", task.model.parameters(), cfg.training.learning_rate)
    return Trainer(task, opt, run=run, tracker=None, config={}, epochs=task.total_epochs,
                   grad_clip=cfg.training.grad_clip_max_norm, epoch_label=task.epoch_label)


def _poison(monkeypatch, staggered: bool):
    real = LatentWindows.load_chunk

    def poisoned(self, c0, c1):
        chunk = real(self, c0, c1)
        obs = self.acq.mask(c0, c1)
        bad = torch.as_tensor(~obs)
        chunk.x = chunk.x.masked_fill(bad, float("nan"))
        if not staggered:
            chunk.x_in = chunk.x
        return chunk

    monkeypatch.setattr(LatentWindows, "load_chunk", poisoned)


@pytest.mark.parametrize("mode", ["time_aligned", "staggered_random"])
def test_training_never_reads_unobserved_frames(tiny_fly, monkeypatch, mode):
    _poison(monkeypatch, staggered=mode == "staggered_random")
    cfg, task = _task(tiny_fly, ["--training.acquisition-mode.mode", mode, "--training.epochs", "1",
                                 "--training.evolve-multiple-steps", "3"])
    _trainer(cfg, task).fit()
    assert all(torch.isfinite(p).all() for p in task.model.parameters())
    val = task.validate(0)
    assert np.isfinite(val["val/loss"]) and val["val/loss"] < val["val/mean_baseline"]


def test_poison_is_caught_when_a_mode_reads_every_frame(tiny_fly, monkeypatch):
    """Control: the same poisoning makes an all-frames run diverge, so the test above can fail."""
    _poison(monkeypatch, staggered=False)
    real_mask = Acquisition.mask
    monkeypatch.setattr(Acquisition, "mask",
                        lambda self, a, b: (np.arange(a, b)[:, None] % 5 == 0) & np.ones((1, self.n_neurons), bool))
    cfg, task = _task(tiny_fly, ["--training.epochs", "1"])
    with pytest.raises(TrainingError, match="loss is not finite"):
        _trainer(cfg, task).fit()
    monkeypatch.setattr(Acquisition, "mask", real_mask)


def test_resume_after_kill_matches_uninterrupted_run(tiny_fly, tmp_path, monkeypatch):
    from neurocast.pipelines.latent import resume_latent, train_latent
    from neurocast.train.loop import Trainer

    overrides = ["--training.epochs", "3", "--runs-dir", str(tmp_path / "runs")]
    full = train_latent(load_task_config(latent_config(tiny_fly), overrides))
    full_losses = [m["train/total"] for m in full.read_metrics() if "train/total" in m]

    real_save = Trainer.save

    def killing_save(self, name):
        path = real_save(self, name)
        if name == "latest.pt" and self.epoch == 1:
            raise SystemExit("killed")  # the process dies right after its epoch-1 checkpoint
        return path

    monkeypatch.setattr(Trainer, "save", killing_save)
    with pytest.raises(SystemExit):
        train_latent(load_task_config(latent_config(tiny_fly), overrides))
    monkeypatch.setattr(Trainer, "save", real_save)
    killed = sorted((tmp_path / "runs" / "test_latent").glob("2*"))[-1]
    assert not (killed / "summary.json").exists() and (killed / "status").read_text().strip() == "terminated"
    resumed = resume_latent(killed)
    losses = [m["train/total"] for m in resumed.read_metrics() if "train/total" in m]
    assert len(losses) == 3
    assert losses == pytest.approx(full_losses, rel=1e-6, abs=0)
    assert resumed.status == "complete"


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tiny_fly, tmp_path, monkeypatch):
    from neurocast.pipelines.latent import train_latent
    from neurocast.train.latent_task import LatentTask

    real = LatentTask.losses

    def exploding(self, batch, epoch):
        out = real(self, batch, epoch)
        if epoch == 1:
            out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(LatentTask, "losses", exploding)
    with pytest.raises(TrainingError, match=r"diverged at epoch 2.*last good checkpoint is .*latest.pt"):
        train_latent(load_task_config(latent_config(tiny_fly), ["--runs-dir", str(tmp_path)]))
    run = next((tmp_path / "test_latent").glob("2*"))
    from neurocast.checkpoints import load_checkpoint

    assert (run / "status").read_text().strip() == "failed"
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["epoch"] == 1
    event = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "diverged" in x]
    assert [e["epoch"] for e in event] == [2]  # numbered like the message


def test_tu20_ems5_run_beats_mean_baseline_at_every_multiple(tiny_fly, run_cli, tmp_path):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(latent_config(tiny_fly)))
    code, out, err = run_cli(
        "train", cfg, "--training.time-units", "20", "--training.evolve-multiple-steps", "5",
        "--training.acquisition-mode.mode", "time_aligned", "--training.epochs", "4",
        "--training.data-passes-per-epoch", "4", "--training.save-checkpoint-every-n-epochs", "2",
        "--runs-dir", tmp_path / "runs",
    )
    assert code == 0, err
    run = tmp_path / "runs" / "test_latent"
    last = out.strip().splitlines()[-1]
    assert last.startswith(str(run))
    summary = json.loads((__import__("pathlib").Path(last) / "summary.json").read_text())
    assert summary["beats_mean_baseline_at_every_multiple"] is True
    assert [r["step"] for r in summary["val_at_multiples_best"]] == [20, 40, 60, 80, 100]
    assert summary["checkpoints"]["epoch_0002.pt"] == 2 and summary["checkpoints"]["epoch_0004.pt"] == 4
    assert summary["checkpoints"]["final.pt"] == 4 and summary["best_epoch"] is not None


def test_sigterm_stops_after_the_epoch_and_resume_completes(tiny_fly, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(latent_config(tiny_fly)))
    env = {**os.environ, "NEUROCAST_QUIET": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurocast", "train", str(cfg), "--training.epochs", "50", "--runs-dir",
         str(tmp_path / "runs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline:
        found = list((tmp_path / "runs" / "test_latent").glob("2*/metrics.jsonl"))
        if found and '"train/total"' in found[0].read_text():
            metrics = found[0]
            break
        time.sleep(0.2)
    assert metrics is not None, proc.stderr.read() if proc.poll() is not None else "no epoch finished in time"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err  # unfinished: `train && analyze` stops here
    run = metrics.parent
    assert out.strip().splitlines()[-1] == str(run)
    assert (run / "status").read_text().strip() == "terminated"
    assert not (run / "checkpoints" / "final.pt").exists()  # a stopped run has no final checkpoint
    done = json.loads((run / "summary.json").read_text())["epochs_completed"]
    assert 1 <= done < 50
    from neurocast.checkpoints import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "latest.pt")["epoch"] == done


def test_an_epoch_has_the_same_steps_in_every_acquisition_mode(tiny_fly):
    """data_passes_per_epoch counts windows on the observation grid, whichever frames may start one."""
    sizes = {}
    for mode in ("time_aligned", "staggered_random", "all"):
        cfg, task = _task(tiny_fly, ["--training.time-units", "5", "--training.acquisition-mode.mode", mode,
                                     "--training.data-passes-per-epoch", "2"])
        sizes[mode] = task.n_batches(0)
        task.close()
    assert sizes["staggered_random"] == sizes["all"]
    assert abs(sizes["staggered_random"] - sizes["time_aligned"]) <= 2  # window starts lost at the range's end
