"""The latent model's baselines and per-neuron metrics, against hand computations."""

import numpy as np
import pytest
import torch

from neurocast.data.acquisition import Acquisition
from neurocast.data.latent_windows import LatentWindows
from neurocast.data.normalization import Normalizer
from neurocast.data.recording import Recording
from neurocast.eval.latent_baselines import BaselineSpec, LatentBaselines, lagged
from neurocast.eval.rollout import SEGMENTS, RolloutResult, evaluate_rollouts, latent_rollout, silent_neurons


def _windows(x, stim, tu=1, mode="all", t0=0, t1=None, window=None):
    rec = Recording(x.astype(np.float32), 0.02, stimulus=stim.astype(np.float32), session="lin")
    N = x.shape[1]
    acq = Acquisition(mode, tu, N, origin=0)
    ident = Normalizer(np.zeros(N), np.ones(N), "none")
    sident = Normalizer(np.zeros(stim.shape[1]), np.ones(stim.shape[1]), "none")
    return LatentWindows(rec, "activity", t0, t1 or x.shape[0], acq, window or tu, ident, sident, 100_000,
                         torch.device("cpu"))


def _linear_system(T=3000, N=5, S=3, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N, N))
    A *= 0.9 / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.normal(size=(S, N))
    s = rng.normal(size=(T, S))
    x = np.zeros((T, N))
    for t in range(1, T):
        x[t] = x[t - 1] @ A.T + s[t - 1] @ B  # frame t holds the state before stimulus t acts
    return x, s, A, B


def test_lds_baseline_recovers_a_known_linear_system():
    x, s, A, B = _linear_system()
    w = _windows(x, s, tu=1)
    base = LatentBaselines(w, BaselineSpec(stimulus_lags=4, lds_dims=5, stimulus_components=3))
    assert base.lds.alpha == 0.0
    # the fitted dynamics, mapped back through the PCA basis, are A and B
    P = base.lds.P
    np.testing.assert_allclose(P @ base.lds.A @ P.T, A.T, atol=1e-6)
    np.testing.assert_allclose(base.lds.B @ P.T, B, atol=1e-6)
    # a 50-step roll-out from frame 2000 follows the true trajectory
    start = 2000
    pred = base.lds.rollout(x[start], s[start : start + 50], 50)
    np.testing.assert_allclose(pred, x[start + 1 : start + 51], atol=1e-5)
    # tu = 5: fitted on pairs 5 apart only, rolled out at 5, interpolated in between
    w5 = _windows(x, s, tu=5, mode="time_aligned", window=5)
    lds5 = LatentBaselines(w5, BaselineSpec(stimulus_lags=4, lds_dims=5, stimulus_components=3)).lds
    pred = lds5.rollout(x[start], s[start : start + 20], 20)
    np.testing.assert_allclose(pred[4::5], x[start + 5 : start + 21 : 5], atol=1e-4)
    np.testing.assert_allclose(pred[1], 0.6 * x[start] + 0.4 * x[start + 5], atol=1e-4)


def test_stimulus_ridge_recovers_a_known_filter_from_observed_frames_only():
    rng = np.random.default_rng(1)
    T, S, N, K = 2000, 2, 3, 3
    s = rng.normal(size=(T, S))
    h = rng.normal(size=(K, S, N))
    x = np.zeros((T, N))
    for k in range(1, K + 1):
        x[k:] += s[:-k] @ h[k - 1]
    x += 0.25  # a constant the intercept must find
    # time_aligned every 4 frames: unobserved frames are poisoned, and must never be read
    poisoned = x.copy()
    poisoned[np.arange(T) % 4 != 0] = 1e6
    w = _windows(poisoned, s, tu=4, mode="time_aligned", window=4)
    base = LatentBaselines(w, BaselineSpec(stimulus_lags=K, lds_dims=3, stimulus_components=S))
    sr = base.stimulus
    F = lagged(s, K)
    np.testing.assert_allclose(F[K:] @ sr.W, x[K:], atol=1e-6)
    np.testing.assert_allclose(sr.predict(s[100:200], K, 50), x[100 + K : 150 + K], atol=1e-6)


def test_initial_state_ablation_is_the_rollout_from_the_training_mean(tiny_fly):
    from conftest import latent_config
    from neurocast.pipelines.latent import build
    from neurocast.tasks import load_task_config

    cfg = load_task_config(latent_config(tiny_fly, time_units=5, evolve_multiple_steps=2, epochs=0))
    _, task = build(cfg, torch.device("cpu"))
    es = task.evalsets[0]
    r = evaluate_rollouts(task.model, es.windows, "latent", 30, 3, 0, np.array([0]), **task.rollout_context(es.name))
    mean = torch.as_tensor(task.norm.apply(task.norm.data_mean))
    for i, s in enumerate(r.starts):
        chunk = es.windows.load_chunk(int(s), int(s) + 31)
        x0 = mean[None, :]
        pred = latent_rollout(task.model, x0, chunk.stim[None, :30], 30).numpy()[0]
        true = chunk.x[1:31].numpy()
        np.testing.assert_allclose(r.curves["from_mean"][i], ((pred - true) ** 2).mean(1), rtol=1e-4, atol=1e-7)
    assert {"stimulus_ridge", "pca_lds", "constant", "interpolation"} <= set(r.curves)
    # R1-R8 of the simulated fly are the input cells (from the recording's roles)
    assert r.input_neurons.sum() == 8 * 7
    task.close()


def _result(curves, per_neuron, neuron_variance, silent, inputs, tu=2, window=4):
    n = next(iter(curves.values())).shape[1]
    N = neuron_variance.size
    return RolloutResult("latent", np.array([0]), curves, per_neuron, data_variance=1.0,
                         neuron_variance=neuron_variance, silent=silent, input_neurons=inputs,
                         var_true=np.ones(N), var_err=np.zeros(N), trace_start=0, trace_true=np.zeros((n, 1)),
                         trace_pred=np.zeros((n, 1)), trace_neurons=np.array([0]), time_units=tu, window=window)


def test_per_neuron_metrics_weight_every_neuron_and_guard_silent_ones():
    var = np.array([4.0, 1.0, 1e-9, 0.25])  # neuron 2 is silent
    silent = silent_neurons(var)
    assert silent.tolist() == [False, False, True, False]
    inputs = np.array([True, False, False, False])
    sq = np.array([2.0, 0.5, 5.0, 0.05])  # squared error per neuron
    per = {g: sq for g in SEGMENTS}
    r = _result({"model": np.ones((1, 6)), "constant": np.ones((1, 6))}, {"model": per, "constant": per}, var, silent,
                inputs)
    # own-variance units: 0.5, 0.5, (silent: out), 0.2 -> mean 0.4; without the input neuron: 0.35
    assert r.per_neuron_mse("model", "overall") == pytest.approx(0.4)
    assert r.per_neuron_mse("model", "overall", exclude_inputs=True) == pytest.approx(0.35)
    s = r.summary()
    assert s["silent_neurons"] == 1 and s["input_neurons"] == 1


def test_stable_horizon_against_the_stimulus_baseline_and_best_linear():
    model = np.array([[0.1, 0.2, 0.3, 0.6, 0.7, 0.8]])
    stim = np.full((1, 6), 0.5)
    lds = np.array([[0.05, 0.1, 0.4, 0.9, 0.9, 0.9]])
    per = {g: np.ones(2) for g in SEGMENTS}
    r = _result({"model": model, "constant": np.ones((1, 6)), "stimulus_ridge": stim, "pca_lds": lds},
                {k: per for k in ("model", "constant", "stimulus_ridge", "pca_lds")}, np.ones(2), np.zeros(2, bool),
                np.zeros(2, bool))
    s = r.summary()
    assert s["stable_horizon_vs_stimulus_ridge"] == 4  # step 4: 0.6 > 0.5
    best = s["best_linear"]["mse"]
    # within the window (steps 1-4): model 0.3, stimulus 0.5, LDS 0.3625 -> LDS is the best linear
    assert best["within_training_window"]["baseline"] == "pca_lds"
    assert best["within_training_window"]["ratio"] == pytest.approx(0.3 / 0.3625)
    assert best["beyond_training_window"]["baseline"] == "stimulus_ridge"
