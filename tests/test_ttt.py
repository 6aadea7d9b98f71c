import copy
import json

import numpy as np
import pytest
import torch

from conftest import forecast_config
from neurocast.data.forecast_batch import ForecastBatch, SessionTable
from neurocast.eval.inner_loop import inner_loop
from neurocast.eval.metrics import masked_mse
from neurocast.models.functional import adaptable, double_backward_attention, fast_init, forward_with, localise
from neurocast.models.poco import POCO
from neurocast.schema.forecast import PocoConfig
from neurocast.tasks import load_task_config
from neurocast.train.meta_task import support_query_split


def tiny_poco(dtype=torch.float64):
    torch.manual_seed(0)
    cfg = PocoConfig(token_length=4, hidden=16, heads=2, head_dim=8, conditioning_dim=24, ffn_mult=2,
                     ffn_dropout=0.0, residual_dropout=0.0, learned_init=True)
    model = POCO(SessionTable([4, 6], [0, 0]), 8, 3, cfg).to(dtype)
    with torch.no_grad():  # open the FiLM gate: embeddings must matter for a meaningful inner loop
        for lin in (model.alpha, model.beta):
            lin.weight.normal_(0, 0.3)
            lin.bias.normal_(0, 0.3)
        model.init_unit.normal_(0, 0.3)
    return model.eval()


def session_batches(D=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(11, dtype=dtype)
    def make(n, off):
        x = torch.sin(0.5 * (t[None, :, None] + off + torch.randn(n, 1, 1, generator=g, dtype=dtype) * 3)
                      + torch.arange(D, dtype=dtype)[None, None, :])
        mask = torch.ones(n, D, dtype=torch.bool)
        return localise(ForecastBatch(x[:, :8], x[:, 8:], mask, torch.zeros(n, dtype=torch.long),
                                      torch.zeros(n, dtype=torch.long), torch.zeros(n, D, dtype=torch.long)))
    return make(6, 0.0), make(5, 7.0)


def meta_loss(model, support, query, create_graph, steps=2, lr=0.5):
    with double_backward_attention(create_graph):
        fast = adaptable(model, fast_init(model, support.x.shape[2], "learned"), "embeddings")
        fast, _ = inner_loop(model, fast, support, steps, lr, create_graph=create_graph)
        return masked_mse(forward_with(model, fast, query), query.y, query.unit_mask, per_unit=True)


def test_inner_steps_change_the_adapted_parameters_and_only_those():
    model = tiny_poco()
    before = copy.deepcopy(model.state_dict())
    support, _ = session_batches()
    start = {k: v.detach().clone() for k, v in fast_init(model, 5, "learned").items()}
    fast, losses = inner_loop(model, adaptable(model, fast_init(model, 5, "learned"), "embeddings"), support, 3, 0.5,
                              create_graph=False)
    assert set(fast) == {"unit_emb", "session_emb"}
    assert all(not torch.allclose(fast[k], start[k]) for k in fast)
    assert losses[-1] < losses[0]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_e2e_gradient_matches_finite_differences_and_differs_from_first_order():
    model = tiny_poco()
    support, query = session_batches()
    param = model.out.weight  # used in the inner loop and by the query
    idx = (1, 3)
    second = torch.autograd.grad(meta_loss(model, support, query, True), param)[0][idx].item()
    first = torch.autograd.grad(meta_loss(model, support, query, False), param)[0][idx].item()
    eps = 1e-6
    with torch.no_grad():
        param[idx] += eps
    up = meta_loss(model, support, query, True).item()
    with torch.no_grad():
        param[idx] -= 2 * eps
    down = meta_loss(model, support, query, True).item()
    with torch.no_grad():
        param[idx] += eps
    fd = (up - down) / (2 * eps)
    assert second == pytest.approx(fd, rel=1e-5, abs=1e-9)
    assert abs(first - fd) > 1e-3 * abs(fd)


def test_support_windows_end_before_query_windows_start():
    rng = np.random.default_rng(0)
    starts = np.arange(0, 500)
    for _ in range(50):
        sup, qry = support_query_split(starts, 20, 16, 16, rng)
        assert sup.size == 16 and qry.size == 16
        assert sup.max() + 20 <= qry.min()


def _meta_task(tiny_rnn, mode, **extra):
    from neurocast.pipelines.forecast import build_task, load_forecast_data

    cfg = load_task_config(forecast_config(tiny_rnn, mode=mode, meta={"support_windows": 8, "query_windows": 8,
                                                                     "meta_batch_size": 3, "inner_steps": 2, **extra}),
                           ["--data.held-out-sessions", "rnn/session_04"])
    sessions, names, _ = load_forecast_data(cfg.data)
    return cfg, build_task(cfg, cfg.model, sessions, names, 0, torch.device("cpu"))


@pytest.mark.parametrize("mode", ["fomaml", "e2e_ttt"])
def test_every_backbone_parameter_gets_an_outer_gradient(tiny_rnn, mode):
    cfg, task = _meta_task(tiny_rnn, mode)
    batches = iter(task.batches(0))
    # POCO's FiLM starts at exactly zero, which blocks the Perceiver's gradient at step 0
    # by design; one outer step opens the gate, after which every parameter must learn.
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-2)
    task.losses(next(batches), 0)["total"].backward()
    opt.step()
    task.model.zero_grad()
    losses = task.losses(next(batches), 0)
    losses["total"].backward()
    missing = [n for n, p in task.model.named_parameters()
               if n not in ("unit_emb", "session_emb") and (p.grad is None or not torch.any(p.grad != 0))]
    assert not missing, missing
    assert task.model.init_unit.grad is not None


def test_held_out_sessions_never_appear_in_meta_batches(tiny_rnn):
    cfg, task = _meta_task(tiny_rnn, "fomaml")
    seen = set()
    for epoch in range(2):
        for groups in task.batches(epoch):
            for group in groups:
                seen.update(s.name for s, _, _ in group)
    assert "rnn/session_04" not in seen and seen <= {f"rnn/session_0{i}" for i in range(4)}


def test_gradient_accumulation_matches_one_big_meta_batch(tiny_rnn):
    cfg, task = _meta_task(tiny_rnn, "fomaml", accumulation=2)
    task.model.eval()  # no dropout: both computations must see the same model
    batch = next(iter(task.batches(0)))
    task.model.zero_grad()
    out = task.losses(batch, 0)
    assert out.pop("_grads_ready") is True
    acc = {n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None}
    task.model.zero_grad()
    total = sum(task.session_meta_loss(s, sup, q)[0] / len(g) / len(batch) for g in batch for s, sup, q in g)
    total.backward()
    for n, p in task.model.named_parameters():
        if n in acc:
            torch.testing.assert_close(p.grad, acc[n], rtol=1e-4, atol=1e-7)


def test_standard_training_then_adapt_cli(tiny_rnn, tmp_path, run_cli):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(forecast_config(tiny_rnn)))
    code, out, err = run_cli("train", cfg, "--data.held-out-sessions", "rnn/session_04", "--runs-dir",
                             tmp_path / "runs")
    assert code == 0, err
    run = __import__("pathlib").Path(out.strip().splitlines()[-1])
    summary = json.loads((run / "seeds" / "0" / "summary.json").read_text())
    ad = summary["adaptation"]["budgets"]["10 windows"]
    assert ad["steps"] == [0, 3, 6] and len(ad["mean_score"]) == 3 and ad["per_session"][0]["support_windows"] == 10
    assert (run / "seeds" / "0" / "figures" / "adaptation_curves.png").exists()
    code, out, err = run_cli("adapt", run, "--data", tiny_rnn / "session_04.zarr", "--steps", "4", "--budget", "12")
    assert code == 0, err
    folder = __import__("pathlib").Path(out.strip().splitlines()[-1])
    assert folder.parent == run / "seeds" / "0" / "adaptations"
    result = json.loads((folder / "adaptation.json").read_text())
    (s,) = result["sessions"]
    assert s["steps"] == [0, 1, 2, 3, 4] and s["support_windows"] == 12
    assert list(folder.glob("adapted_*.pt")) and (folder / "adaptation_curve.png").exists()
    code, out, err = run_cli("adapt", run, "--data", tiny_rnn / "session_04.zarr", "--budget", "0")
    assert code == 2 and "--budget must be >= 1" in err


def test_compare_ttt_methods_writes_separate_runs_one_table_and_figure(tiny_rnn, tmp_path):
    from neurocast.pipelines.ttt_compare import train_ttt_compare

    cfg = forecast_config(tiny_rnn, max_steps=4, val_every=2, seeds=[0, 1],
                          meta={"support_windows": 8, "query_windows": 8, "meta_batch_size": 2, "inner_steps": 1})
    cfg.update(task="ttt_compare", name="cmp", runs_dir=str(tmp_path))
    cfg["data"]["held_out_sessions"] = ["rnn/session_03", "rnn/session_04"]
    run = train_ttt_compare(load_task_config(cfg))
    for m in ("standard", "fomaml", "e2e_ttt"):
        for seed in (0, 1):
            s = json.loads((run.path / "methods" / m / "seeds" / str(seed) / "summary.json").read_text())
            assert set(s["adaptation"]["sessions"]) == {"rnn/session_03", "rnn/session_04"}
    rows = (run.path / "comparison.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and [r.split(",")[0] for r in rows[1:]] == ["standard", "fomaml", "e2e_ttt"]
    assert (run.path / "adaptation_curves.png").exists()
    summary = json.loads((run.path / "summary.json").read_text())
    assert set(summary["methods"]) == {"standard", "fomaml", "e2e_ttt"}
    assert summary["methods"]["fomaml"]["10 windows"]["train_seconds_per_step"] > 0


@pytest.mark.parametrize("mode", ["fomaml", "e2e_ttt"])
def test_activation_checkpointing_gives_the_same_outer_gradient(tiny_rnn, mode):
    grads = []
    for ckpt in (False, True):
        cfg, task = _meta_task(tiny_rnn, mode, activation_checkpointing=ckpt)
        task.model.eval()  # no dropout: both runs must compute the same function
        batch = next(iter(task.batches(0)))
        task.model.zero_grad()
        task.losses(batch, 0)["total"].backward()  # outside any caller's attention-kernel context
        grads.append({n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-7)
