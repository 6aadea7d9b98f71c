import json

import numpy as np
import pytest
import torch

from conftest import latent_config
from neurocast.eval.early_stopping import EarlyStopping
from neurocast.eval.metrics import stable_horizon, variance_explained
from neurocast.eval.rollout import SEGMENTS, RolloutResult, latent_rollout
from neurocast.models.latent import LatentModel
from neurocast.schema.latent import LatentModelConfig
from neurocast.tasks import load_task_config


def test_metric_functions_match_hand_computation():
    assert stable_horizon([0.5, 0.9, 1.2, 0.3]) == 3
    assert stable_horizon([0.5, 0.9, 1.0]) == 3  # never exceeds 1: the horizon reached
    assert stable_horizon([0.2, float("nan")]) == 2
    true = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    pred = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    ve = variance_explained(pred, true)
    # neuron 0: err = [1, 0, -1] var 2/3, true var 8/3 -> 0.75; neuron 1 constant -> nan
    assert ve[0] == pytest.approx(0.75) and np.isnan(ve[1])


def test_rollout_summary_parts():
    tu, window, n = 2, 4, 6
    mse = np.array([[1, 2, 3, 4, 5, 6], [3, 2, 1, 4, 5, 10]], dtype=float)  # 2 starts
    const = np.full((2, n), 10.0)
    zeros = {g: np.zeros(3) for g in SEGMENTS}
    r = RolloutResult("latent", np.array([0, 10]), {"model": mse, "constant": const},
                      {"model": zeros, "constant": zeros}, data_variance=4.0, neuron_variance=np.ones(3),
                      silent=np.zeros(3, bool), input_neurons=np.zeros(3, bool),
                      var_true=np.ones(3), var_err=np.zeros(3), trace_start=0, trace_true=np.zeros((n, 1)),
                      trace_pred=np.zeros((n, 1)), trace_neurons=np.array([0]), time_units=tu, window=window)
    s = r.summary()
    curve = mse.mean(0)  # [2, 2, 2, 4, 5, 8]
    assert s["mse_at_observation_points"] == pytest.approx((curve[1] + curve[3]) / 2)   # steps 2, 4
    assert s["mse_between_observation_points"] == pytest.approx((curve[0] + curve[2]) / 2)  # steps 1, 3
    assert s["mse_beyond_training_window"] == pytest.approx((curve[4] + curve[5]) / 2)  # steps 5, 6
    assert s["stable_horizon"] == 5  # normalised 5/4 > 1 at step 5
    assert s["stable_horizon_worst_start"] == 5
    assert s["beats_constant_within_training_window"] is True


def test_zero_init_latent_rollout_is_the_constant_latent_prediction():
    cfg = LatentModelConfig(latent_dims=4, encoder={"num_hidden_units": 8}, decoder={"num_hidden_units": 8},
                            evolver={"num_hidden_units": 8, "zero_init": True},
                            stimulus_encoder={"num_hidden_units": 4, "num_output_dims": 3})
    torch.manual_seed(0)
    model = LatentModel(10, 2, cfg).eval()
    x0 = torch.randn(3, 10)
    stim = torch.randn(3, 50, 2)
    pred = latent_rollout(model, x0, stim, 50, decode_chunk=16)
    const = model.decode(model.encode(x0))
    assert pred.shape == (3, 50, 10)
    torch.testing.assert_close(pred, const[:, None, :].expand_as(pred))


def test_early_stopping_rule():
    worse = EarlyStopping(higher_is_better=False, min_improvement=0.1, patience=2)
    assert [worse.update(v)[1] for v in (1.0, 1.1, 1.2)] == [False, False, True]
    better = EarlyStopping(higher_is_better=False, min_improvement=0.1, patience=2)
    assert not any(better.update(v)[1] for v in (1.0, 0.8, 0.6, 0.5, 0.4))
    small = EarlyStopping(higher_is_better=False, min_improvement=0.1, patience=2)
    # improvements smaller than 10% do not count
    assert [small.update(v)[1] for v in (1.0, 0.95, 0.93)] == [False, False, True]
    horizon = EarlyStopping(higher_is_better=True, min_improvement=0.1, patience=1)
    assert [horizon.update(v) for v in (100, 200, 205)] == [(True, False), (True, False), (False, True)]


def test_analysis_of_an_epoch_loads_that_epochs_weights(tiny_fly, tmp_path, run_cli):
    from neurocast.checkpoints import load_checkpoint
    from neurocast.pipelines.latent import train_latent
    from neurocast.pipelines.latent_analysis import LatentAnalysis

    cfg = load_task_config(latent_config(tiny_fly), [
        "--training.epochs", "4", "--training.save-checkpoint-every-n-epochs", "2", "--runs-dir", str(tmp_path),
        "--eval.horizon", "100", "--eval.n-starts", "3", "--eval.rollouts", "latent",
    ])
    run = train_latent(cfg)
    an = LatentAnalysis(run.path)
    label, state = an.load(2)
    ep2 = load_checkpoint(run.checkpoints / "epoch_0002.pt")["model"]
    final = load_checkpoint(run.checkpoints / "final.pt")["model"]
    own = an.task.model.state_dict()
    assert label == "epoch_0002" and state["epoch"] == 2
    assert all(torch.equal(own[k], ep2[k]) for k in own)
    assert any(not torch.equal(own[k], final[k]) for k in own)
    an.close()

    code, out, err = run_cli("analyze", run.path, "--epochs", "2,4")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(run.path / "analysis")
    m2 = json.loads((run.path / "analysis" / "epoch_0002" / "metrics.json").read_text())
    m4 = json.loads((run.path / "analysis" / "epoch_0004" / "metrics.json").read_text())
    assert (m2["epoch"], m4["epoch"]) == (2, 4) and m2["horizon"] == 100
    assert m2["rollouts"]["val"]["latent"]["mse_overall"] != m4["rollouts"]["val"]["latent"]["mse_overall"]
    rows = (run.path / "analysis" / "epochs.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[1].startswith("2,") and rows[2].startswith("4,")
    code, out, err = run_cli("analyze", run.path, "--epoch", "3")
    assert code == 2 and "no checkpoint epoch_0003.pt" in err and "epoch_0002.pt" in err


def test_early_stopping_integration(tiny_fly, tmp_path):
    from neurocast.pipelines.latent import train_latent

    cfg = load_task_config(latent_config(tiny_fly), [
        "--training.epochs", "10", "--runs-dir", str(tmp_path),
        "--eval.early-stopping.enabled", "true", "--eval.early-stopping.every-epochs", "1",
        "--eval.early-stopping.patience", "2", "--eval.early-stopping.min-improvement", "0.9",
        "--eval.early-stopping.horizon", "100", "--eval.early-stopping.n-starts", "3",
        "--eval.early-stopping.dataset", "motion",
    ])
    run = train_latent(cfg)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["epochs_completed"] == 3  # first evaluation sets the best; 2 more without 90% gain
    assert "did not improve" in summary["stopped_early"]
    assert summary["checkpoints"]["best_early_stop.pt"] == 1
    logged = [m for m in run.read_metrics() if "early_stop/metric" in m]
    assert len(logged) == 3 and logged[0]["early_stop/dataset"] == "cv/motion"
    with pytest.raises(Exception, match="eval.early_stopping.dataset='nope'"):
        train_latent(load_task_config(latent_config(tiny_fly), ["--eval.early-stopping.enabled", "true",
                                                                 "--eval.early-stopping.dataset", "nope"]))


def test_figures_are_pngs_with_labelled_axes(tiny_fly, tmp_path, monkeypatch):
    import matplotlib.image as mpimg

    from neurocast.pipelines.latent import train_latent
    from neurocast.pipelines.latent_analysis import LatentAnalysis
    from neurocast.report import figures

    run = train_latent(load_task_config(latent_config(tiny_fly), [
        "--training.epochs", "1", "--runs-dir", str(tmp_path), "--eval.horizon", "150", "--eval.n-starts", "2"]))
    captured = []
    real = figures._save

    def capture(fig, path, tight=True):
        fx = fig._supxlabel.get_text() if fig._supxlabel is not None else ""
        fy = fig._supylabel.get_text() if fig._supylabel is not None else ""
        for ax in fig.axes:
            if ax.get_visible() and ax.has_data():
                captured.append((str(path), ax.get_xlabel() or fx, ax.get_ylabel() or fy))
        return real(fig, path, tight)

    monkeypatch.setattr(figures, "_save", capture)
    an = LatentAnalysis(run.path)
    folder, _ = an.analyze("final")
    an.close()
    pngs = list(folder.glob("*.png"))
    assert len(pngs) >= 9
    for p in pngs:
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100
    assert captured and all(x and y for _, x, y in captured), [c for c in captured if not (c[1] and c[2])]


def test_demo_writes_report_with_figures(tiny_fly, tmp_path, monkeypatch):
    import matplotlib.image as mpimg

    from neurocast.pipelines.demo import run_demo

    monkeypatch.chdir(tmp_path)
    report = run_demo([
        "--data.simulation", "null", "--data.path", str(tiny_fly),
        "--data.cross-validation", "[{recording: cv, name: motion}]",
        "--data.split.train-end", "8000", "--data.split.validation-start", "8000",
        "--data.split.validation-end", "10000",
        "--training.epochs", "2", "--training.reconstruction-warmup-epochs", "1",
        "--training.data-passes-per-epoch", "1",
        "--eval.horizon", "300", "--eval.n-starts", "3", "--runs-dir", str(tmp_path / "runs"),
    ])
    text = report.read_text()
    assert report.name == "report.md" and "## Does the model beat the strongest simple baselines?" in text
    assert ("How to read" in text and "stimulus-only ridge" in text and "Verdict" in text
            and "Network parameters" in text)
    images = [line.split("(", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(images) >= 9
    for rel in images:
        assert mpimg.imread(report.parent / rel).ndim == 3
