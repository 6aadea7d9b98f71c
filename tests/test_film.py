"""The blocked FiLM readout is the reference expression: outputs, gradients, second derivatives."""

import pytest
import torch

from neurocast.data.forecast_batch import ForecastBatch, SessionTable
from neurocast.models.film import film_readout, film_reference
from neurocast.models.poco import POCO
from neurocast.schema.forecast import PocoConfig


def _inputs(x_grad=False, M=301, C=12, d=16, H=64, P=4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(M, C, generator=g)
    t = [x.requires_grad_(x_grad), torch.randn(M, d, generator=g)]
    t += [torch.randn(H, C, generator=g) * 0.3, torch.randn(H, generator=g),
          torch.randn(H, d, generator=g) * 0.3, torch.randn(H, generator=g), torch.randn(P, H, generator=g) * 0.3]
    return [v.requires_grad_(True) if i else v for i, v in enumerate(t)]


def _graph_ops(y):
    seen, todo = set(), [y.grad_fn]
    while todo:
        f = todo.pop()
        if f is not None and f not in seen:
            seen.add(f)
            todo += [n for n, _ in f.next_functions]
    return {type(f).__name__ for f in seen}


@pytest.mark.parametrize("block", [7, 64, 1000])
@pytest.mark.parametrize("x_grad", [False, True])
def test_blocked_film_equals_reference_in_outputs_and_gradients(block, x_grad):
    ref, blk = _inputs(x_grad), _inputs(x_grad)
    y_ref, y_blk = film_reference(*ref), film_readout(*blk, block=block)
    assert "BlockedFiLMBackward" in _graph_ops(y_blk)
    torch.testing.assert_close(y_blk, y_ref, rtol=1e-6, atol=1e-6)
    w = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2))
    wanted = [i for i, t in enumerate(ref) if t.requires_grad]
    g_ref = torch.autograd.grad((y_ref * w).sum(), [ref[i] for i in wanted])
    g_blk = torch.autograd.grad((y_blk * w).sum(), [blk[i] for i in wanted])
    for a, b in zip(g_blk, g_ref):  # sums over rows in another order: float32 rounding of the largest entries
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))
    with torch.no_grad():
        torch.testing.assert_close(film_readout(*blk, block=block), y_ref, rtol=1e-6, atol=1e-6)


def test_blocked_film_second_derivatives_equal_reference():
    ref, blk = _inputs(), _inputs()
    out = []
    for t, y in ((ref, film_reference(*ref)), (blk, film_readout(*blk, block=50))):
        g = torch.autograd.grad(y.square().sum(), t[1:], create_graph=True)
        out.append(torch.autograd.grad(sum((v * v).sum() for v in g), t[1:]))
    for a, b in zip(*out):  # summed in a different order: float32 rounding of the largest entries
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_poco_with_blocked_film_equals_reference_in_training_mode():
    """Whole model, dropout on: the same seed gives the same outputs and parameter gradients."""
    table = SessionTable([40, 90], [0, 0])
    cfg = PocoConfig(token_length=4, hidden=32, heads=2, head_dim=16, conditioning_dim=96)
    g = torch.Generator().manual_seed(0)
    sess = torch.tensor([0, 1, 1, 0, 1])
    D = 90
    mask = torch.arange(D)[None] < torch.as_tensor(table.units)[sess][:, None]
    uid = torch.where(mask, torch.as_tensor(table.offsets())[sess][:, None] + torch.arange(D)[None], 0)
    batch = ForecastBatch(torch.randn(5, 16, D, generator=g), torch.randn(5, 4, D, generator=g), mask, sess,
                          torch.zeros(5, dtype=torch.long), uid)
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = POCO(table, 16, 4, cfg).train()
        with torch.no_grad():  # open the FiLM gate so every path carries gradient
            for lin in (model.alpha, model.beta):
                lin.weight.normal_(0, 0.1)
                lin.bias.normal_(0, 0.1)
        model.fused_film = fused
        torch.manual_seed(1)
        y = model(batch)
        assert ("BlockedFiLMBackward" in _graph_ops(y)) == fused
        loss = ((y - batch.y) ** 2 * mask[:, None, :]).mean()
        results.append((y, torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)))
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g0):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
