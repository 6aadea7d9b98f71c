import json

import numpy as np
import pytest
import torch

from conftest import shared
from neurocast.data import Recording
from neurocast.data.forecast_batch import ForecastBatch, SessionTable
from neurocast.data.forecast_data import prepare_sessions, session_table, split_pieces
from neurocast.errors import DataError
from neurocast.eval.forecast_eval import aggregate, evaluate_sessions
from neurocast.models.poco import POCO
from neurocast.schema.forecast import ForecastData, PocoConfig


def data_cfg(**kw):
    base = {"datasets": [{"name": "d", "path": "."}], "context": 12, "horizon": 4, "block_length": 1000}
    base.update(kw)
    return ForecastData(**base)


def rec(T, N, session, dt=0.5, seed=0, **kw):
    r = np.random.default_rng(seed)
    return Recording(r.normal(size=(T, N)), dt, session=session, **kw)


def test_splits_are_per_block_and_windows_never_cross():
    pieces = split_pieces(2500, 1000, (0.6, 0.2, 0.2), np.array([]))
    assert pieces == {"train": [(0, 600), (1000, 1900)], "val": [(600, 800), (1900, 2200)],
                      "test": [(800, 1000), (2200, 2500)]}
    assert split_pieces(800, 1000, (0.6, 0.2, 0.2), np.array([])) == {
        "train": [(0, 480)], "val": [(480, 640)], "test": [(640, 800)]}
    # a recording boundary cuts a piece
    assert split_pieces(1000, 1000, (0.6, 0.2, 0.2), np.array([300]))["train"] == [(0, 300), (300, 600)]
    (s,) = prepare_sessions([("d", [rec(2500, 3, "a")], None)], data_cfg())
    L = 16
    for split in ("train", "val", "test"):
        starts = s.windows(split, L)
        assert starts.size
        for st in starts:
            assert any(a <= st and st + L <= b for a, b in s.pieces[split])
    assert s.windows("train", L).size == (600 - L + 1) + (900 - L + 1)


def test_normalisation_uses_training_frames_only():
    x = np.random.default_rng(0).normal(size=(1000, 4))
    x[600:] += 100.0  # val/test far away: must not touch the statistics
    (s,) = prepare_sessions([("d", [Recording(x, 0.5, session="a")], None)], data_cfg())
    train = s.data[:600]
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(s.stats["mean"], x[:600].mean(0), rtol=1e-6)
    assert s.data[600:].mean() > 50  # val/test keep their offset, in training units
    # PCA also fitted on training frames only
    (p,) = prepare_sessions([("d", [Recording(x, 0.5, session="a")], None)], data_cfg(pca_components=2))
    assert p.D == 2 and p.stats["pca_components"].shape == (4, 2)


def test_filter_stays_inside_split_pieces():
    x = np.zeros((1000, 1))
    x[601, 0] = 100.0  # an impulse in the validation piece
    (s,) = prepare_sessions([("d", [Recording(x, 0.5, session="a")], None)],
                            data_cfg(normalization="none", filter={"kind": "lowpass", "high_hz": 0.2}))
    assert np.abs(s.data[:600]).max() == 0  # nothing leaks back into training frames


def test_prediction_score_equals_hand_computation():
    (s,) = prepare_sessions([("d", [rec(1000, 5, "a")], None)], data_cfg())
    table = session_table([s], 1)

    class Zero(torch.nn.Module):
        sessions = table

        def forward(self, b):
            return torch.zeros_like(b.y)

    tensors = {s.name: torch.from_numpy(s.data)}
    per = evaluate_sessions(Zero(), [s], "test", 12, 4, tensors, {s.name: 0}, torch.device("cpu"))
    starts = s.windows("test", 16)
    y = np.stack([s.data[a + 12 : a + 16] for a in starts])
    last = np.stack([s.data[a + 11] for a in starts])[:, None, :]
    mse, copy = (y**2).mean(), ((y - last) ** 2).mean()
    assert per[s.name]["mse"] == pytest.approx(mse, rel=1e-5)
    assert per[s.name]["copy_mse"] == pytest.approx(copy, rel=1e-5)
    assert per[s.name]["score"] == pytest.approx(1 - mse / copy, rel=1e-5)
    agg = aggregate(per, ["d"])
    assert agg["score"] == pytest.approx(1 - mse / copy, rel=1e-5)


def _batch(table, sess_ids, D, C=16, P=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    units = torch.tensor(table.units)[sess_ids]
    mask = torch.arange(D)[None] < units[:, None]
    offs = torch.as_tensor(table.offsets())
    uid = torch.where(mask, offs[sess_ids][:, None] + torch.arange(D)[None], torch.zeros((), dtype=torch.long))
    x = torch.randn(len(sess_ids), C, D, generator=g) * mask[:, None]
    return ForecastBatch(x, torch.randn(len(sess_ids), P, D, generator=g), mask, sess_ids,
                         torch.zeros(len(sess_ids), dtype=torch.long), uid)


def test_poco_mixes_session_sizes_in_one_batch_without_padding_effects():
    torch.manual_seed(0)
    table = SessionTable([5, 9], [0, 0])
    cfg = PocoConfig(token_length=4, hidden=32, heads=2, head_dim=16, conditioning_dim=64)
    model = POCO(table, 16, 4, cfg).eval()
    with torch.no_grad():  # open the FiLM gate so the Perceiver matters
        model.alpha.weight.normal_(0, 0.1)
        model.beta.weight.normal_(0, 0.1)
    mixed = _batch(table, torch.tensor([0, 1, 0, 1]), D=9)
    out = model(mixed)
    assert out.shape == (4, 4, 9)
    alone = ForecastBatch(mixed.x[[0, 2], :, :5], mixed.y[[0, 2], :, :5], mixed.unit_mask[[0, 2], :5],
                          mixed.session[[0, 2]], mixed.dataset[[0, 2]], mixed.unit_ids[[0, 2], :5])
    torch.testing.assert_close(model(alone), out[[0, 2], :, :5], rtol=1e-5, atol=1e-6)
    # garbage in padded units changes nothing for real units
    noisy = ForecastBatch(mixed.x + torch.randn_like(mixed.x) * (~mixed.unit_mask[:, None, :]), mixed.y,
                          mixed.unit_mask, mixed.session, mixed.dataset, mixed.unit_ids)
    torch.testing.assert_close(model(noisy)[mixed.unit_mask[:, None, :].expand_as(out)],
                               out[mixed.unit_mask[:, None, :].expand_as(out)], rtol=1e-5, atol=1e-6)


def test_poco_folded_film_equals_the_written_formula_with_the_same_gradients():
    torch.manual_seed(0)
    table = SessionTable([5, 9], [0, 0])
    model = POCO(table, 16, 4, PocoConfig(token_length=4, hidden=32, heads=2, head_dim=16, conditioning_dim=64)).eval()
    with torch.no_grad():
        for lin in (model.alpha, model.beta):
            lin.weight.normal_(0, 0.1)
            lin.bias.normal_(0, 0.1)
    b = _batch(table, torch.tensor([0, 1, 1]), D=9)
    e = model.condition(b)
    h = model.mlp_in(b.x.transpose(1, 2))
    written = model.out(model.alpha(e) * h + model.beta(e)).transpose(1, 2)
    params = [model.beta.weight, model.beta.bias, model.out.weight, model.alpha.weight]
    g_written = torch.autograd.grad(written.square().sum(), params)
    folded = model(b)
    g_folded = torch.autograd.grad(folded.square().sum(), params)
    torch.testing.assert_close(folded, written, rtol=1e-5, atol=1e-6)
    for a, c in zip(g_folded, g_written):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)


def test_poco_initial_forecast_is_constant_and_training_lowers_the_loss():
    torch.manual_seed(0)
    table = SessionTable([5, 9], [0, 0])
    model = POCO(table, 16, 4, PocoConfig(token_length=4, hidden=32, heads=2, head_dim=16, conditioning_dim=64))
    b = _batch(table, torch.tensor([0, 1, 1, 0, 1]), D=9)
    out = model(b)
    torch.testing.assert_close(out, model.out.bias[None, :, None].expand_as(out))  # zero FiLM: constant b_out
    t = torch.linspace(0, 12, 20)
    x = torch.sin(t[:, None] + torch.arange(9)[None, :] * 0.7)  # predictable sine waves
    b = ForecastBatch(x[None, :16].repeat(5, 1, 1) * b.unit_mask[:, None], x[None, 16:].repeat(5, 1, 1),
                      b.unit_mask, b.session, b.dataset, b.unit_ids)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    m = b.unit_mask[:, None, :].expand(-1, 4, -1)
    losses = []
    for _ in range(30):
        loss = ((model(b) - b.y) ** 2)[m].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bad_forecast_input():
    with pytest.raises(DataError, match="fewer than context \\+ horizon = 16"):
        prepare_sessions([("d", [rec(10, 3, "short")], None)], data_cfg())
    with pytest.raises(DataError, match="no training window"):
        prepare_sessions([("d", [rec(100, 3, "a")], None)], data_cfg(block_length=20))
    with pytest.raises(DataError, match=r"different frame intervals \(0.5 s in 'a', 0.7 s in 'b'\).*resample_dt"):
        prepare_sessions([("d", [rec(200, 3, "a", dt=0.5), rec(200, 3, "b", dt=0.7)], None)], data_cfg())
    sessions = prepare_sessions([("d", [rec(200, 3, "a", dt=0.5), rec(280, 3, "b", dt=0.7)], 0.5)], data_cfg())
    assert [s.dt for s in sessions] == [0.5, 0.5] and sessions[1].T == int(279 * 0.7 / 0.5) + 1


def test_held_out_sessions_never_enter_training_batches():
    from neurocast.train.forecast_task import ForecastTask

    cfg = data_cfg(held_out_sessions=["d/b"])
    sessions = prepare_sessions([("d", [rec(400, 3, "a"), rec(400, 4, "b", seed=1), rec(400, 5, "c", seed=2)], None)],
                                cfg)
    table = session_table(sessions, 1)
    assert table.names == ["d/a", "d/c"]
    from neurocast.schema.forecast import ForecastTraining

    tr = ForecastTraining(max_steps=20, batch_size=16, val_every=10)
    model = POCO(table, 12, 4, PocoConfig(token_length=4, hidden=16, heads=2, head_dim=8, conditioning_dim=16))
    task = ForecastTask(cfg, tr, sessions, ["d"], model, torch.device("cpu"), seed=0)
    seen = set()
    for epoch in range(2):
        for batch in task.batches(epoch):
            for b in batch:
                seen.update(b.session.tolist())
                assert int(b.unit_mask.sum(1).max()) in (3, 5)
    assert seen == {0, 1}  # the held-out session has no row in the table, and never appears


def test_celegans_training_run_end_to_end(run_cli, tmp_path):
    root = shared("celegans_flavell").parent
    code, out, err = run_cli(
        "train", "configs/poco_celegans.yaml", "--data.root", root, "--training.max-steps", "6",
        "--training.val-every", "3", "--training.batch-size", "8", "--training.val-windows", "16",
        "--model.hidden", "32", "--model.heads", "2", "--model.conditioning-dim", "64",
        "--runs-dir", tmp_path, "--logging.tensorboard", "false",
    )
    assert code == 0, err
    run = tmp_path / "poco_celegans"
    path = out.strip().splitlines()[-1]
    assert path.startswith(str(run))
    summary = json.loads((__import__("pathlib").Path(path) / "summary.json").read_text())
    assert set(summary["sessions"]) == {f"celegans/{s}" for s in
                                        ("2022-01-16-01", "2022-07-26-31", "2022-07-26-38", "2022-07-27-31",
                                         "2022-07-27-38", "2022-08-02-31")}
    seed_dir = __import__("pathlib").Path(path) / "seeds" / "0"
    for f in ("figures/per_horizon_error.png", "figures/session_scores.png", "figures/forecast_traces.png",
              "figures/val_predictions.npz", "checkpoints/best.pt", "summary.json"):
        assert (seed_dir / f).exists(), f
    s0 = json.loads((seed_dir / "summary.json").read_text())
    assert s0["checkpoint_tested"] == "best.pt" and "celegans" in s0["test"]["datasets"]
    arrays = np.load(seed_dir / "figures" / "val_predictions.npz")
    assert any(k.endswith("__prediction") for k in arrays.files)
