"""Test-time adaptation: normalisation, the one inner loop, the protocol's baselines and statistics, init_from."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import forecast_config
from neurocast.errors import ConfigError
from neurocast.tasks import load_task_config


def _task(tiny_rnn, overrides=(), **training):
    from neurocast.pipelines.forecast import build_task, load_forecast_data

    cfg = load_task_config(forecast_config(tiny_rnn, **training),
                           ["--data.held-out-sessions", "rnn/session_04", *overrides])
    sessions, names, _ = load_forecast_data(cfg.data)
    task = build_task(cfg, cfg.model, sessions, names, 0, torch.device("cpu"))
    with torch.no_grad():  # open the FiLM gate so that embeddings and inputs matter
        g = torch.Generator().manual_seed(0)
        for lin in (task.model.alpha, task.model.beta):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.2)
    task.model.eval()
    return cfg, task


def test_held_out_session_is_scored_with_its_training_normalisation(tiny_rnn):
    """The bug: adapt_session re-normalised a held-out session on its few support frames by
    default, so its zero-shot score was not the model's score on the session as preprocessed
    for every training session (on the simulator 0.30 -> 0.16 with 10 windows)."""
    from neurocast.eval.adaptation import adapt_session, support_query
    from neurocast.eval.forecast_eval import evaluate_sessions
    from neurocast.models.functional import fast_init

    cfg, task = _task(tiny_rnn)
    s = next(x for x in task.sessions if x.held_out)
    _, query = support_query(s, task.C + task.P, support_windows=10, query_windows=32)
    r = adapt_session(task.model, s, task.C, task.P, task.device, steps=0, lr=1e-3, init="mean", support_windows=10,
                      query=query)
    ev = evaluate_sessions(task.model, [s], "val", task.C, task.P, task.tensors, {}, task.device,
                           windows={s.name: query}, fast={s.name: fast_init(task.model, s.D, "mean")})
    assert r.scores[0] == pytest.approx(ev[s.name]["score"], rel=1e-5)
    assert r.normalization == "session"
    few = adapt_session(task.model, s, task.C, task.P, task.device, steps=0, lr=1e-3, init="mean", support_windows=10,
                        query=query, normalization="support")
    assert few.scores[0] != pytest.approx(r.scores[0], rel=1e-3)


def test_sgd_adaptation_is_the_meta_inner_loop(tiny_rnn):
    from neurocast.eval.adaptation import SessionBatches, adapt_session, support_query
    from neurocast.eval.inner_loop import inner_loop
    from neurocast.models.functional import adaptable, fast_init

    cfg, task = _task(tiny_rnn)
    s = next(x for x in task.sessions if x.held_out)
    support, _ = support_query(s, task.C + task.P, support_windows=12)
    r = adapt_session(task.model, s, task.C, task.P, task.device, steps=3, lr=0.5, init="mean", optimizer="sgd",
                      support_windows=12, batch_size=16)
    batch = SessionBatches(s, s.data, task.C, task.P, task.device)(support)
    fast, losses = inner_loop(task.model, adaptable(task.model, fast_init(task.model, s.D, "mean"), "embeddings", True),
                              batch, 3, 0.5, create_graph=False)
    for k in ("unit_emb", "session_emb"):
        torch.testing.assert_close(r.fast[k], fast[k].detach())
    assert r.support_loss == pytest.approx([float(x.detach()) for x in losses], rel=1e-5)
    assert r.support_loss[-1] < r.support_loss[0]


def test_adapting_more_groups_changes_them_but_never_the_model(tiny_rnn):
    from neurocast.eval.adaptation import adapt_session

    cfg, task = _task(tiny_rnn)
    s = next(x for x in task.sessions if x.held_out)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    r = adapt_session(task.model, s, task.C, task.P, task.device, steps=3, lr=1e-2,
                      params=["session", "film", "output"],
                      optimizer="adam", support_windows=12)
    assert set(r.adapted_parameters()) == {"alpha.weight", "alpha.bias", "beta.weight", "beta.bias", "out.weight",
                                           "out.bias"}
    assert not torch.equal(r.fast["out.weight"], before["out.weight"])
    assert torch.equal(r.fast["unit_emb"], task.model.unit_emb.detach().mean(0, keepdim=True).expand(s.D, -1))
    assert all(torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    with pytest.raises(ConfigError, match="parameter group 'head'"):
        adapt_session(task.model, s, task.C, task.P, task.device, steps=1, lr=1e-2, params=["head"], support_windows=12)


def test_early_stopping_holds_back_windows_with_unseen_targets():
    from neurocast.eval.adaptation import holdout_split

    fit, held = holdout_split(np.arange(50), 48, 16, 0.2)
    assert held.tolist() == list(range(40, 50)) and fit.max() + 48 + 16 <= held.min() + 48
    fit, held = holdout_split(np.arange(10), 48, 16, 0.2)  # too few windows: no early stopping
    assert fit.size == 10 and held.size == 0


def test_steps_to_95_only_where_the_gain_interval_excludes_zero():
    from neurocast.eval.adaptation import gain_statistics

    steps = np.array([0, 5, 10])
    mixed = np.array([[0.1, 0.2, 0.2], [0.1, 0.0, 0.0], [0.2, 0.3, 0.32], [0.2, 0.1, 0.08]])
    st = gain_statistics(mixed, steps)
    assert st["steps_to_95"] is None and st["steps_to_95_note"].startswith("no gain")
    clear = np.array([[0.1, 0.19, 0.2], [0.1, 0.2, 0.21], [0.2, 0.3, 0.3], [0.0, 0.1, 0.11]])
    st = gain_statistics(clear, steps)
    assert st["gain"]["mean"] - st["gain"]["ci95"] > 0 and st["steps_to_95"] == 10
    st = gain_statistics(clear, steps, reference=np.array([0.2, 0.21, 0.3, 0.1]))  # long fine-tuning reached less
    assert st["reference"] == "long fine-tuning" and st["steps_to_95"] == 5


def test_protocol_scores_every_baseline_on_the_curve_query_windows(tiny_rnn, tmp_path, monkeypatch):
    import neurocast.eval.adaptation as adaptation
    import neurocast.eval.adaptation_protocol as protocol
    from neurocast.pipelines.forecast import adaptation_protocol
    from neurocast.runs import RunDir

    cfg, task = _task(tiny_rnn, ["--eval.adaptation.budgets", "10", "all", "--eval.adaptation.steps", "2",
                                 "--eval.adaptation.eval-every", "1", "--eval.adaptation.long-steps", "3",
                                 "--eval.adaptation.scratch-steps", "2", "--eval.adaptation.holdout", "0.2"])
    seen = []
    real = adaptation.score_batches

    def spy(model, params, batches):
        seen.append((type(model).__name__, tuple(np.concatenate([b.starts for b in batches]).tolist())))
        return real(model, params, batches)

    monkeypatch.setattr(adaptation, "score_batches", spy)
    monkeypatch.setattr(protocol, "score_batches", spy)
    run = RunDir.create_at(tmp_path / "r", "task: forecast\n", seed=0)
    out = adaptation_protocol(cfg, task, run)
    assert set(out["budgets"]) == {"10 windows", "all windows"}
    for label, b in out["budgets"].items():
        row = b["per_session"][0]
        for key in ("zero_shot_mean_init", "zero_shot_own_init", "long_finetune", "nlinear_train", "nlinear_support",
                    "scratch"):
            assert row[key] is not None and np.isfinite(row[key]), (label, key)
        assert b["gain"]["mean"] == pytest.approx(row["curve"][-1] - row["curve"][0])
    # every score of every model (POCO curve, long fine-tuning, NLinear, from-scratch) used one window set per budget
    windows = {w for _, w in seen}
    assert len(windows) == 2 and {m for m, _ in seen} == {"POCO", "NLinear"}
    assert out["budgets"]["all windows"]["per_session"][0]["holdout_windows"] > 0
    assert (run.figures / "adaptation_curves.png").exists()


def test_meta_training_from_a_pretrained_checkpoint_starts_from_its_weights(tiny_rnn, tmp_path):
    from neurocast.checkpoints import load_checkpoint
    from neurocast.pipelines.forecast import build_task, load_forecast_data, train_forecast

    std = load_task_config({**forecast_config(tiny_rnn, max_steps=4, val_every=2), "runs_dir": str(tmp_path),
                            "eval": {"adaptation": {"budgets": []}}})
    run = train_forecast(std)
    cfg = load_task_config(forecast_config(tiny_rnn, mode="fomaml", init_from=str(run.path),
                                           meta={"support_windows": 8, "query_windows": 8}))
    sessions, names, _ = load_forecast_data(cfg.data)
    task = build_task(cfg, cfg.model, sessions, names, 0, torch.device("cpu"))
    ref = load_checkpoint(run.path / "seeds" / "0" / "checkpoints" / "best.pt")["model"]
    own = task.model.state_dict()
    assert {k for k in ref} <= set(own)
    for k, v in ref.items():
        torch.testing.assert_close(own[k], v)
    torch.testing.assert_close(own["init_unit"], ref["unit_emb"].mean(0))
    bad = load_task_config(forecast_config(tiny_rnn, mode="fomaml", init_from=str(tmp_path / "missing")))
    with pytest.raises(Exception, match="missing"):
        build_task(bad, bad.model, sessions, names, 0, torch.device("cpu"))


def test_meta_sgd_step_sizes_learn_and_contiguous_support(tiny_rnn):
    from neurocast.pipelines.forecast import build_task, load_forecast_data
    from neurocast.train.meta_task import support_query_split

    cfg = load_task_config(forecast_config(tiny_rnn, mode="e2e_ttt", meta={
        "support_windows": 8, "query_windows": 8, "meta_batch_size": 2, "inner_steps": 2, "learn_inner_lr": True,
        "inner_lr": 0.3, "support_sampling": "contiguous"}))
    sessions, names, _ = load_forecast_data(cfg.data)
    task = build_task(cfg, cfg.model, sessions, names, 0, torch.device("cpu"))
    with torch.no_grad():
        task.model.alpha.weight.normal_(0, 0.2)
    out = task.losses(next(iter(task.batches(0))), 0)
    out["total"].backward()
    g = task.model.inner_log_lr.grad
    assert g is not None and g[0] != 0 and g[1] != 0  # units, session
    assert float(out["support_ratio"]) < 1.0
    sup, qry = support_query_split(np.arange(300), 20, 8, 8, np.random.default_rng(0), contiguous=True)
    assert np.all(np.diff(sup) == 1) and sup.max() + 20 <= qry.min()


def test_held_out_patterns_and_inline_simulation_overrides(tmp_path):
    from conftest import TINY_RNN
    from neurocast.pipelines.forecast import expand_held_out, load_forecast_data

    ids = {"rnn": [f"session_{i:02d}" for i in range(6)]}
    assert expand_held_out(["last:2"], ids) == ["rnn/session_04", "rnn/session_05"]
    assert expand_held_out(["rnn/session_01..session_02", "rnn/first:1"], ids) == [
        "rnn/session_01", "rnn/session_02", "rnn/session_00"]
    with pytest.raises(ConfigError, match="K must be in 1..5"):
        expand_held_out(["rnn/last:6"], ids)
    sim = tmp_path / "sim.yaml"
    sim.write_text(yaml.safe_dump({**TINY_RNN, "output_root": str(tmp_path / "data"), "duration_s": 10.0}))
    cfg = load_task_config({"task": "forecast", "name": "x", "data": {
        "datasets": [{"name": "rnn", "simulation": str(sim)}], "context": 16, "horizon": 4, "block_length": 100}},
        ["--data.datasets.0.simulation-overrides.n_sessions", "7", "--data.held-out-sessions", "last:3"])
    sessions, _, paths = load_forecast_data(cfg.data)
    assert len(sessions) == 7 and [s.name for s in sessions if s.held_out] == [f"rnn/session_0{i}" for i in (4, 5, 6)]


def test_sigterm_stops_a_multi_model_run(tiny_rnn, tmp_path, monkeypatch):
    import neurocast.pipelines.forecast as fc

    calls = []

    def fake_train_seed(cfg, model_cfg, sessions, names, seed, run, device, resume=False):
        calls.append((model_cfg.kind, seed))
        run.set_status("terminated")
        return {"terminated": True}

    monkeypatch.setattr(fc, "train_seed", fake_train_seed)
    cfg = forecast_config(tiny_rnn, seeds=[0, 1])
    cfg.update(task="forecast_compare", runs_dir=str(tmp_path), models={"a": {"kind": "nlinear"}, "b": {"kind": "mlp"}})
    cfg.pop("model")
    run = fc.train_forecast(load_task_config(cfg))
    assert calls == [("nlinear", 0)] and run.status == "terminated"


def test_adapt_a_compare_run_with_adam(tiny_rnn, tmp_path, run_cli):
    cfg = forecast_config(tiny_rnn, max_steps=2, val_every=2)
    cfg.update(task="forecast_compare", models={"lin": {"kind": "nlinear"}, "poco": cfg["model"]})
    cfg.pop("model")
    cfg["eval"]["adaptation"]["budgets"] = []
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli("train", path, "--data.held-out-sessions", "rnn/session_04", "--runs-dir",
                             tmp_path / "runs")
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    code, out, err = run_cli("adapt", run, "--data", tiny_rnn / "session_04.zarr", "--steps", "3",
                             "--optimizer", "adam", "--lr", "1e-3", "--budget", "40", "--holdout", "0.25",
                             "--params", "embeddings", "film")
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    assert folder.parent == run / "models" / "poco" / "seeds" / "0" / "adaptations"
    result = json.loads((folder / "adaptation.json").read_text())
    assert result["optimizer"] == "adam" and result["lr"] == 1e-3 and result["params"] == ["embeddings", "film"]
    (s,) = result["sessions"]
    assert s["holdout_windows"] == 10 and s["early_stopped_step"] is not None
    saved = torch.load(next(folder.glob("adapted_*.pt")), weights_only=False)
    assert set(saved["parameters"]) == {"alpha.weight", "alpha.bias", "beta.weight", "beta.bias"}
    code, out, err = run_cli("adapt", run, "--data", tiny_rnn / "session_04.zarr", "--model", "lin", "--steps", "1")
    assert code == 2 and "no per-session embeddings" in err
    code, out, err = run_cli("adapt", run, "--data", tiny_rnn / "session_04.zarr", "--model", "gru", "--steps", "1")
    assert code == 2 and "'gru' is not in" in err


def test_a_stopped_ttt_compare_resumes_without_retraining_finished_methods(tiny_rnn, tmp_path, monkeypatch, run_cli):
    import neurocast.pipelines.forecast as fc
    from neurocast.pipelines.ttt_compare import train_ttt_compare

    real = fc.train_seed
    calls = []

    def stopping(cfg, model_cfg, sessions, names, seed, run, device, resume=False):
        calls.append(cfg.training.mode)
        if cfg.training.mode == "fomaml":  # as if SIGTERM arrived while FOMAML trained
            run.set_status("terminated")
            return {"terminated": True}
        return real(cfg, model_cfg, sessions, names, seed, run, device, resume)

    monkeypatch.setattr(fc, "train_seed", stopping)
    cfg = forecast_config(tiny_rnn, max_steps=2, val_every=2, meta={"support_windows": 8, "query_windows": 8,
                                                                     "meta_batch_size": 2, "inner_steps": 1})
    cfg.update(task="ttt_compare", name="cmp", runs_dir=str(tmp_path), methods=["standard", "fomaml", "e2e_ttt"],
               meta_from_standard=True)
    cfg["data"]["held_out_sessions"] = ["rnn/last:1"]
    cfg["eval"]["adaptation"].update(baselines=[], long_steps=0)
    run = train_ttt_compare(load_task_config(cfg))
    assert calls == ["standard", "fomaml"] and run.status == "terminated"
    assert not (run.path / "methods" / "e2e_ttt").exists()
    calls.clear()
    monkeypatch.setattr(fc, "train_seed", lambda *a, **k: (calls.append(a[0].training.mode), real(*a, **k))[1])
    code, out, err = run_cli("train", "--resume", run.path)
    assert code == 0, err
    assert calls == ["fomaml", "e2e_ttt"]  # standard was complete and is not trained again
    summary = json.loads((run.path / "summary.json").read_text())
    assert set(summary["methods"]) == {"standard", "fomaml", "e2e_ttt"}
    meta_cfg = yaml.safe_load((run.path / "methods" / "e2e_ttt" / "config.yaml").read_text())
    assert meta_cfg["training"]["init_from"] == str(run.path / "methods" / "standard")
