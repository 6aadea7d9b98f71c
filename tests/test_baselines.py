import numpy as np
import pytest
import torch

from neurocast.data.forecast_batch import ForecastBatch, SessionTable
from neurocast.errors import ConfigError
from neurocast.eval.metrics import masked_loss
from neurocast.models.baselines import (
    DLinear,
    GRUForecaster,
    NLinear,
    TSMixer,
    UnivariateMLP,
    build_baseline,
    moving_average,
    session_matmul,
)
from neurocast.schema.forecast import (
    DLinearConfig,
    GRUConfig,
    MLPForecaster,
    NLinearConfig,
    PocoConfig,
    TSMixerConfig,
)

C, P = 24, 8
UNITS = [5, 8]
SESSIONS = SessionTable(units=UNITS, datasets=[0, 0])

CONFIGS = {
    "mlp": MLPForecaster(hidden=32, layers=2),
    "nlinear": NLinearConfig(),
    "dlinear": DLinearConfig(kernel=5),
    "tsmixer": TSMixerConfig(blocks=2, ff_dim=16, dropout=0.1),
    "gru": GRUConfig(hidden=16, layers=2),
}
CLASSES = {"mlp": UnivariateMLP, "nlinear": NLinear, "dlinear": DLinear, "tsmixer": TSMixer, "gru": GRUForecaster}


def sine_sessions(T: int = 400, seed: int = 0) -> list[np.ndarray]:
    """Session s: its units are sines with session-specific periods and random phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None]
    data = []
    for s, d in enumerate(UNITS):
        periods = rng.uniform(8, 16, d) if s == 0 else rng.uniform(12, 30, d)
        phases = rng.uniform(0, 2 * np.pi, d)
        data.append((np.sin(2 * np.pi * t / periods + phases) + 0.5 * s).astype(np.float32))
    return data


def make_batch(data, picks, width: int | None = None, garbage: bool = False, seed: int = 1) -> ForecastBatch:
    """Windows (session, start) padded to ``width`` units; padding zero or random garbage."""
    D = width or max(data[s].shape[1] for s, _ in picks)
    g = torch.Generator().manual_seed(seed)
    B = len(picks)
    x = torch.randn(B, C + P, D, generator=g) * 100 if garbage else torch.zeros(B, C + P, D)
    mask = torch.zeros(B, D, dtype=torch.bool)
    for b, (s, t0) in enumerate(picks):
        d = data[s].shape[1]
        x[b, :, :d] = torch.from_numpy(data[s][t0 : t0 + C + P])
        mask[b, :d] = True
    session = torch.tensor([s for s, _ in picks])
    offsets = torch.as_tensor(SESSIONS.offsets())
    unit_ids = torch.where(mask, offsets[session][:, None] + torch.arange(D), 0)
    return ForecastBatch(x[:, :C], x[:, C:], mask, session, torch.zeros(B, dtype=torch.long), unit_ids)


def random_picks(data, n: int, rng) -> list[tuple[int, int]]:
    sessions = rng.integers(0, len(data), n)
    return [(int(s), int(rng.integers(0, data[s].shape[0] - C - P + 1))) for s in sessions]


def build(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_baseline(CONFIGS[kind], SESSIONS, C, P)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_factory_and_output_shape(kind):
    model = build(kind)
    assert type(model) is CLASSES[kind]
    data = sine_sessions()
    batch = make_batch(data, [(0, 0), (1, 3), (0, 7)])
    y = model(batch)
    assert y.shape == (3, P, max(UNITS)) and torch.isfinite(y).all()
    # a batch of small-session windows only is narrower than the largest session
    y = model(make_batch(data, [(0, 0), (0, 5)]))
    assert y.shape == (2, P, UNITS[0]) and torch.isfinite(y).all()


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_padding_never_reaches_real_units(kind):
    model = build(kind).eval()
    data = sine_sessions()
    picks = [(0, 0), (1, 10), (0, 33), (1, 2)]
    ref = model(make_batch(data, picks))
    for width in (8, 13):  # as wide as the largest session, and wider than any session
        wide = make_batch(data, picks, width=width, garbage=True)
        out = model(wide)
        assert out.shape == (4, P, width) and torch.isfinite(out).all()
        for b, (s, _) in enumerate(picks):
            d = UNITS[s]
            torch.testing.assert_close(out[b, :, :d], ref[b, :, :d], rtol=1e-5, atol=1e-5)
    # the same windows alone (one session per batch, narrower batches) give the same forecasts
    alone = model(make_batch(data, [(0, 0), (0, 33)]))
    torch.testing.assert_close(alone, ref[[0, 2], :, : UNITS[0]], rtol=1e-5, atol=1e-5)
    # and the real units' forecasts have no gradient with respect to padded inputs
    wide = make_batch(data, picks, width=13, garbage=True)
    x = wide.x.clone().requires_grad_(True)
    wide.x = x
    y = model(wide)
    (y * wide.unit_mask[:, None, :]).sum().backward()
    assert x.grad is not None
    assert torch.all(x.grad.permute(0, 2, 1)[~wide.unit_mask] == 0)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_training_lowers_the_masked_loss(kind):
    data = sine_sessions()
    rng = np.random.default_rng(2)
    held = make_batch(data, random_picks(data, 64, rng))
    model = build(kind, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_on(batch):
        mask = batch.unit_mask[:, None, :].expand_as(batch.y)
        return masked_loss("mse", model(batch), batch.y, mask)

    model.eval()
    with torch.no_grad():
        before = float(loss_on(held))
    model.train()
    for _ in range(40):
        opt.zero_grad()
        loss = loss_on(make_batch(data, random_picks(data, 32, rng)))
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(loss_on(held))
    assert after < 0.6 * before, (before, after)


def test_nlinear_matches_hand_computation():
    sessions = SessionTable(units=[2], datasets=[0])
    model = NLinear(sessions, 3, 2, NLinearConfig())
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]]))
        model.linear.bias.copy_(torch.tensor([0.1, -0.2]))
    x = torch.tensor([[[1.0, 4.0], [2.0, 5.0], [3.0, 7.0]]])  # (B=1, C=3, D=2)
    batch = ForecastBatch(x, None, torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, dtype=torch.long),
                          torch.zeros(1, dtype=torch.long), torch.arange(2)[None])
    # unit 0: context - last = [-2, -1, 0] -> [1*-2 + 0 + 0 + 0.1, 0.5*-2 + 1 + 0 - 0.2] + 3 = [1.1, 2.8]
    # unit 1: context - last = [-3, -2, 0] -> [-3 + 0.1, -1.5 + 2 - 0.2] + 7 = [4.1, 7.3]
    expected = torch.tensor([[[1.1, 4.1], [2.8, 7.3]]])
    torch.testing.assert_close(model(batch), expected)


def test_dlinear_decomposition_and_initial_forecast():
    x = torch.tensor([1.0, 2.0, 4.0])[None, :, None]
    # edges repeat: [1, 1, 2, 4, 4] -> averages of three
    torch.testing.assert_close(moving_average(x, 3)[0, :, 0], torch.tensor([4 / 3, 7 / 3, 10 / 3]))
    torch.testing.assert_close(moving_average(x, 1), x)
    # weights 1/C on trend and seasonal part, zero biases: the forecast is the context mean
    data = sine_sessions()
    batch = make_batch(data, [(0, 0), (1, 4)])
    y = build("dlinear")(batch)
    mean = batch.x.mean(dim=1, keepdim=True).expand(-1, P, -1)
    torch.testing.assert_close(y, mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="odd"):
        DLinear(SESSIONS, C, P, DLinearConfig(kernel=4))


def test_session_matmul_matches_a_gather():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 4, generator=g)
    w = torch.randn(5, 4, 6, generator=g)
    for session in (torch.tensor([4, 0, 4, 2, 0, 4, 1]), torch.full((7,), 3)):
        expected = torch.einsum("brk,bkn->brn", x, w[session])
        torch.testing.assert_close(session_matmul(x, w, session), expected)


def test_factory_rejects_non_baselines():
    with pytest.raises(ConfigError, match="not a baseline"):
        build_baseline(PocoConfig(), SESSIONS, C, P)
