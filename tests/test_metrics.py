"""The consolidated metrics give exactly the values of the definitions they replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurocast.eval.metrics import masked_loss, masked_mse


# ---------------------------------------------------------------------------- the replaced definitions
def old_forecast_masked_mse(pred, target, unit_mask):  # train/forecast_task.py (training loss)
    m = unit_mask[:, None, :].expand_as(pred)
    diff = torch.where(m, pred - target, torch.zeros((), device=pred.device))
    return (diff * diff).sum() / m.sum().clamp_min(1)


def old_ttt_masked_mse(pred, target, unit_mask):  # train/ttt.py (inner loop, meta-loss, adaptation)
    m = unit_mask[:, None, :].expand_as(pred)
    diff = torch.where(m, pred - target, torch.zeros((), device=pred.device, dtype=pred.dtype))
    return (diff * diff).sum() / m.sum().clamp_min(1)


def old_numpy_masked_mse(pred, target, mask=None):  # eval/metrics.py (numpy, entry mask, a float)
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if mask is None:
        return float(np.mean((pred - target) ** 2))
    mask = np.asarray(mask, bool)
    return float(np.where(mask, (pred - target) ** 2, 0.0).sum() / max(mask.sum(), 1))


def forecast_case(dtype, seed, nan_outside=True):
    g = torch.Generator().manual_seed(seed)
    B, P, D = 5, 7, 9
    pred = torch.randn(B, P, D, generator=g, dtype=dtype, requires_grad=True)
    target = torch.randn(B, P, D, generator=g, dtype=dtype)
    unit_mask = torch.rand(B, D, generator=g) < 0.7
    unit_mask[0] = False  # a window with no real unit at all
    if nan_outside:  # padded units may hold anything
        target = torch.where(unit_mask[:, None, :].expand_as(target), target, torch.nan)
    return pred, target, unit_mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(5))
def test_per_unit_masked_mse_equals_the_training_and_adaptation_losses_it_replaced(dtype, seed):
    pred, target, unit_mask = forecast_case(dtype, seed)
    new = masked_mse(pred, target, unit_mask, per_unit=True)
    for old_fn in (old_forecast_masked_mse, old_ttt_masked_mse):
        old = old_fn(pred, target, unit_mask)
        assert new.dtype == old.dtype and torch.equal(new, old)  # bit for bit
        g_new, = torch.autograd.grad(new, pred, create_graph=True)
        g_old, = torch.autograd.grad(old, pred, create_graph=True)
        assert torch.equal(g_new, g_old)
        # second order (E2E-TTT differentiates through the inner gradient)
        h_new, = torch.autograd.grad((g_new ** 2).sum(), pred)
        h_old, = torch.autograd.grad((g_old ** 2).sum(), pred)
        assert torch.equal(h_new, h_old)


@pytest.mark.parametrize("seed", range(5))
def test_entry_masked_mse_equals_the_numpy_definition_and_the_latent_loss(seed):
    rng = np.random.default_rng(seed)
    pred, target = rng.normal(size=(4, 6, 3)), rng.normal(size=(4, 6, 3))
    mask = rng.random((4, 6, 3)) < 0.5
    p, t, m = torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(mask)
    assert float(masked_mse(p, t, m)) == pytest.approx(old_numpy_masked_mse(pred, target, mask), rel=1e-12)
    assert float(masked_mse(p, t)) == pytest.approx(old_numpy_masked_mse(pred, target), rel=1e-12)
    assert torch.equal(masked_mse(p, t, m), masked_loss("mse", p, t, m))


def test_masked_mse_ignores_nan_targets_outside_the_mask_and_counts_only_the_mask():
    pred = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, torch.nan], [3.0, torch.nan]]])
    unit_mask = torch.tensor([[True, False]])
    assert float(masked_mse(pred, target, unit_mask, per_unit=True)) == pytest.approx((1 + 9) / 2)


def old_variance_explained(pred, true):  # eval/metrics.py (traces)
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    var_true, var_err = true.var(axis=0), (pred - true).var(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var_true > 0, 1.0 - var_err / var_true, np.nan)


def old_rollout_variance_explained(var_err, var_true):  # eval/rollout.py (RolloutResult, accumulated variances)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var_true > 0, 1 - var_err / var_true, np.nan)


@pytest.mark.parametrize("seed", range(5))
def test_variance_explained_of_traces_and_of_accumulated_variances_equal_the_old_definitions(seed):
    from neurocast.eval.metrics import variance_explained

    rng = np.random.default_rng(seed)
    true = rng.normal(size=(50, 8)).astype(np.float32)
    true[:, 3] = 1.5  # a constant trace: NaN
    pred = true + rng.normal(scale=0.5, size=true.shape).astype(np.float32)
    assert np.array_equal(variance_explained(pred, true), old_variance_explained(pred, true), equal_nan=True)
    var_err, var_true = rng.random(8) * 2, rng.random(8)
    var_true[2] = 0.0
    assert np.array_equal(variance_explained(var_err=var_err, var_true=var_true),
                          old_rollout_variance_explained(var_err, var_true), equal_nan=True)
