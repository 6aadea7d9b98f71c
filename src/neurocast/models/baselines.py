"""Baseline multi-session forecasters: NLinear, DLinear, univariate MLP, TSMixer, GRU.

Every model maps a padded batch (see :mod:`neurocast.data.forecast_batch`) of context
windows ``x`` (B, C, D) to forecasts (B, P, D). Sessions have different unit counts, so a
batch is padded to D units with ``unit_mask`` (B, D); padded inputs are replaced by zeros
before anything else, and every operation that mixes units multiplies its inputs by the
mask, so real units' forecasts never depend on what (or how much) padding a batch holds.
Padded units' outputs are finite but meaningless (the loss masks them out).

Notation: C context frames, P horizon, S sessions, D_s units of session s, D_max the
largest session, x[c, d] the context of one window.

* **NLinear** (Zeng et al. 2023, "Are Transformers Effective for Time Series
  Forecasting?"): one linear map shared by all units and sessions on the context
  relative to its last frame, ``y = W (x - x[C-1]) + b + x[C-1]`` with W (P, C).
* **DLinear** (same paper): a moving average with an odd kernel k (edges padded by
  repeating the first / last frame) splits the context into trend
  ``t[c] = mean(x[c-(k-1)/2 .. c+(k-1)/2])`` and seasonal part ``s = x - t``; the forecast
  is ``y = W_t[s] t + b_t[s] + W_s[s] s + b_s[s]`` with per-session maps (C -> P) shared by
  the session's units, initialised to the context mean (W = 1/C, b = 0).
* **UnivariateMLP**: one MLP (C -> hidden -> ... -> P, ReLU) shared by every unit: no
  population information at all (the POCO paper's "MLP" ablation).
* **TSMixer** (Chen et al. 2023, "TSMixer: An All-MLP Architecture for Time Series
  Forecasting"): reversible instance normalisation (Kim et al. 2022, without its affine
  parameters: each unit of each window is standardised over its context, and the forecast
  de-standardised with the same mean and standard deviation), then ``blocks`` mixer blocks, each

      time mixing     x <- x + Dropout(ReLU(W_time LN_t(x) + b))       (per unit, C -> C)
      feature mixing  x <- x + m * Dropout(W2[s] Dropout(ReLU(W1[s] (m * LN_t(x)) + b1[s])) + b2[s])

  (per frame, across the session's units D_s -> ff_dim -> D_s, m the unit mask), and a
  shared temporal projection (C -> P) per unit. The original normalises jointly over time
  and features; here the features are a session's own set of units padded to D_max, so
  LN_t normalises each (window, unit) over time, which no padded unit can reach. The
  feature-mixing weights are per session, stored padded to the largest session:
  W1 (S, D_max, ff_dim), b1 (S, ff_dim), W2 (S, ff_dim, D_max), b2 (S, D_max); rows of W1 and
  columns of W2 beyond D_s only ever meet zeros (masked inputs, masked outputs), so they
  receive no gradient and never act.
* **GRUForecaster**: a per-session input map of every frame (D_s units -> hidden,
  W_in (S, D_max, H), b_in (S, H)), a shared ``torch.nn.GRU`` over the C frames and a
  per-session direct multi-step readout of its last hidden state h,
  ``y = W_out[s] h + b_out[s]`` with W_out (S, H, P * D_max), b_out (S, P * D_max); with
  ``residual`` (default) that is the change from the last context frame, which keeps the
  forecast at the current level when recordings drift (raw values otherwise).

Per-session matrices are applied with :func:`session_matmul`: the batch's windows are
grouped by session (sort, no Python loop) and each group is multiplied by its session's
matrix in one batched product, so the memory used is that of the distinct sessions'
weights, not one copy per window (a (B, H, P * D_max) gather would be gigabytes for the
GRU readout).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neurocast.data.forecast_batch import ForecastBatch, SessionTable
from neurocast.errors import ConfigError
from neurocast.models.forecast_base import ForecastModel
from neurocast.models.mlp import MLP
from neurocast.schema.forecast import DLinearConfig, GRUConfig, MLPForecaster, NLinearConfig, TSMixerConfig

BaselineConfig = MLPForecaster | NLinearConfig | DLinearConfig | TSMixerConfig | GRUConfig

# ---------------------------------------------------------------------------- helpers


def masked_input(batch: ForecastBatch) -> torch.Tensor:
    """The context (B, C, D) with padded units set to exactly zero (whatever they held)."""
    zero = torch.zeros((), dtype=batch.x.dtype, device=batch.x.device)
    return torch.where(batch.unit_mask[:, None, :], batch.x, zero)


def fit_units(t: torch.Tensor, width: int) -> torch.Tensor:
    """Cut or zero-pad the last (unit) dimension of ``t`` to ``width``.

    Real units of a session come first, and a session has at most D_max units, so cutting a
    batch wider than D_max only drops padding.
    """
    d = t.shape[-1]
    if d == width:
        return t
    if d > width:
        return t[..., :width]
    return F.pad(t, (0, width - d))


def session_matmul(x: torch.Tensor, weight: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
    """``out[b] = x[b] @ weight[session[b]]`` for x (B, R, K), weight (S, K, N) -> (B, R, N).

    Windows are grouped by session into a zero-padded (U, M, R, K) buffer (U distinct
    sessions in the batch, M windows of the most frequent one) and multiplied by the U
    distinct matrices in one batched product; no per-window copy of the weights is made.
    """
    B, R, K = x.shape
    uniq, inv, counts = torch.unique(session, return_inverse=True, return_counts=True)
    if uniq.numel() == 1:
        return x @ weight[uniq[0]]
    order = torch.argsort(inv, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(inv)
    rank[order] = torch.arange(B, device=x.device) - starts[inv[order]]
    M = int(counts.max())
    buf = x.new_zeros(uniq.numel(), M, R, K)
    buf[inv, rank] = x
    out = torch.bmm(buf.reshape(uniq.numel(), M * R, K), weight[uniq])
    return out.reshape(uniq.numel(), M, R, -1)[inv, rank]


def session_uniform(n_sessions: int, *shape: int, fan_in: list[int] | int) -> nn.Parameter:
    """A (S, *shape) parameter, session s drawn from U(-1/sqrt(f_s), 1/sqrt(f_s)).

    ``fan_in`` is one value for all sessions or one per session (e.g. the session's own
    unit count, rather than the padded width, for maps whose input is the session's units).
    """
    fans = [fan_in] * n_sessions if isinstance(fan_in, int) else list(fan_in)
    if len(fans) != n_sessions:
        raise ValueError(f"fan_in has {len(fans)} entries for {n_sessions} sessions")
    bound = torch.tensor([1.0 / math.sqrt(max(1, f)) for f in fans]).reshape(-1, *([1] * len(shape)))
    return nn.Parameter((torch.rand(n_sessions, *shape) * 2 - 1) * bound)


# ---------------------------------------------------------------------------- NLinear


class NLinear(ForecastModel):
    """Linear map of the context relative to its last frame, shared by all units and sessions."""

    def __init__(self, sessions: SessionTable, context: int, horizon: int, cfg: NLinearConfig):
        super().__init__(sessions, context, horizon)
        self.cfg = cfg
        self.linear = nn.Linear(context, horizon)

    def forward(self, batch: ForecastBatch) -> torch.Tensor:
        x = masked_input(batch)                        # (B, C, D)
        last = x[:, -1:, :]                            # (B, 1, D)
        y = self.linear((x - last).transpose(1, 2))    # (B, D, P)
        return y.transpose(1, 2) + last


# ---------------------------------------------------------------------------- DLinear


def moving_average(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centred moving average over time of x (B, C, D), edges padded by repeating the end frames."""
    if kernel == 1:
        return x
    half = (kernel - 1) // 2
    xt = x.transpose(1, 2)                                             # (B, D, C)
    padded = torch.cat([xt[..., :1].expand(-1, -1, half), xt, xt[..., -1:].expand(-1, -1, half)], dim=-1)
    return F.avg_pool1d(padded, kernel_size=kernel, stride=1).transpose(1, 2)


class DLinear(ForecastModel):
    """Trend / seasonal decomposition with one linear map (C -> P) each per session."""

    def __init__(self, sessions: SessionTable, context: int, horizon: int, cfg: DLinearConfig):
        super().__init__(sessions, context, horizon)
        if cfg.kernel % 2 == 0:
            raise ConfigError(f"model.kernel must be odd (a centred moving average), got {cfg.kernel}")
        self.cfg = cfg
        self.kernel = int(cfg.kernel)
        S = sessions.n_sessions
        self.trend_weight = nn.Parameter(torch.full((S, context, horizon), 1.0 / context))
        self.trend_bias = nn.Parameter(torch.zeros(S, horizon))
        self.seasonal_weight = nn.Parameter(torch.full((S, context, horizon), 1.0 / context))
        self.seasonal_bias = nn.Parameter(torch.zeros(S, horizon))

    def forward(self, batch: ForecastBatch) -> torch.Tensor:
        x = masked_input(batch)                                # (B, C, D)
        trend = moving_average(x, self.kernel)
        seasonal = x - trend
        s = batch.session
        y = session_matmul(trend.transpose(1, 2), self.trend_weight, s) + self.trend_bias[s][:, None, :]
        y = y + session_matmul(seasonal.transpose(1, 2), self.seasonal_weight, s) + self.seasonal_bias[s][:, None, :]
        return y.transpose(1, 2)                               # (B, P, D)


# ---------------------------------------------------------------------------- univariate MLP


class UnivariateMLP(ForecastModel):
    """One MLP (C -> hidden x layers -> P, ReLU) applied to every unit on its own."""

    def __init__(self, sessions: SessionTable, context: int, horizon: int, cfg: MLPForecaster):
        super().__init__(sessions, context, horizon)
        self.cfg = cfg
        self.mlp = MLP(context, horizon, cfg.hidden, cfg.layers, act="ReLU")

    def forward(self, batch: ForecastBatch) -> torch.Tensor:
        x = masked_input(batch)
        return self.mlp(x.transpose(1, 2)).transpose(1, 2)


# ---------------------------------------------------------------------------- TSMixer


class MixerBlock(nn.Module):
    """One TSMixer block on x (B, C, D_max): time mixing, then per-session feature mixing."""

    def __init__(self, sessions: SessionTable, context: int, ff_dim: int, dropout: float):
        super().__init__()
        S, D = sessions.n_sessions, sessions.max_units
        self.time_norm = nn.LayerNorm(context)
        self.time_linear = nn.Linear(context, context)
        self.feature_norm = nn.LayerNorm(context)
        self.w1 = session_uniform(S, D, ff_dim, fan_in=sessions.units)
        self.b1 = session_uniform(S, ff_dim, fan_in=sessions.units)
        self.w2 = session_uniform(S, ff_dim, D, fan_in=ff_dim)
        self.b2 = session_uniform(S, D, fan_in=ff_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
        """x (B, C, D_max), mask (B, 1, D_max) float, session (B,)."""
        xt = x.transpose(1, 2)                                                    # (B, D, C)
        x = x + self.dropout(F.relu(self.time_linear(self.time_norm(xt)))).transpose(1, 2)
        u = self.feature_norm(x.transpose(1, 2)).transpose(1, 2) * mask          # (B, C, D)
        h = F.relu(session_matmul(u, self.w1, session) + self.b1[session][:, None, :])
        v = session_matmul(self.dropout(h), self.w2, session) + self.b2[session][:, None, :]
        return x + self.dropout(v) * mask


class TSMixer(ForecastModel):
    """TSMixer with per-session feature mixing (see the module docstring)."""

    eps: float = 1e-5  # added to the context variance of reversible instance normalisation

    def __init__(self, sessions: SessionTable, context: int, horizon: int, cfg: TSMixerConfig):
        super().__init__(sessions, context, horizon)
        self.cfg = cfg
        self.blocks = nn.ModuleList(
            MixerBlock(sessions, context, cfg.ff_dim, cfg.dropout) for _ in range(cfg.blocks)
        )
        self.projection = nn.Linear(context, horizon)

    def forward(self, batch: ForecastBatch) -> torch.Tensor:
        D = batch.x.shape[2]
        width = self.sessions.max_units
        x = fit_units(masked_input(batch), width)                          # (B, C, D_max)
        mask = fit_units(batch.unit_mask.to(x.dtype), width)[:, None, :]    # (B, 1, D_max)
        mean = x.mean(dim=1, keepdim=True)                                  # reversible instance norm
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps)
        x = (x - mean) / std
        for block in self.blocks:
            x = block(x, mask, batch.session)
        y = self.projection(x.transpose(1, 2)).transpose(1, 2)             # (B, P, D_max)
        return fit_units(y * std + mean, D)


# ---------------------------------------------------------------------------- GRU


class GRUForecaster(ForecastModel):
    """Per-session input map, shared GRU, per-session direct multi-step readout."""

    def __init__(self, sessions: SessionTable, context: int, horizon: int, cfg: GRUConfig):
        super().__init__(sessions, context, horizon)
        self.cfg = cfg
        S, H, D = sessions.n_sessions, cfg.hidden, sessions.max_units
        self.w_in = session_uniform(S, D, H, fan_in=sessions.units)
        self.b_in = session_uniform(S, H, fan_in=sessions.units)
        self.gru = nn.GRU(H, H, num_layers=cfg.layers, batch_first=True)
        self.w_out = session_uniform(S, H, horizon * D, fan_in=H)
        self.b_out = nn.Parameter(torch.zeros(S, horizon * D))
        self.residual = cfg.residual

    def forward(self, batch: ForecastBatch) -> torch.Tensor:
        B, _, D = batch.x.shape
        s = batch.session
        x = fit_units(masked_input(batch), self.sessions.max_units)          # (B, C, D_max)
        z = session_matmul(x, self.w_in, s) + self.b_in[s][:, None, :]       # (B, C, H)
        _, h_n = self.gru(z)
        last = h_n[-1][:, None, :]                                            # (B, 1, H)
        y = session_matmul(last, self.w_out, s)[:, 0] + self.b_out[s]         # (B, P * D_max)
        y = fit_units(y.reshape(B, self.horizon, self.sessions.max_units), D)
        if self.residual:  # forecast the change from the last observed frame
            y = y + masked_input(batch)[:, -1:, :]
        return y


# ---------------------------------------------------------------------------- factory

_BASELINES: dict[str, type[ForecastModel]] = {
    "mlp": UnivariateMLP,
    "nlinear": NLinear,
    "dlinear": DLinear,
    "tsmixer": TSMixer,
    "gru": GRUForecaster,
}


def build_baseline(cfg: BaselineConfig, sessions: SessionTable, context: int, horizon: int) -> ForecastModel:
    """The baseline named by ``cfg.kind`` (mlp, nlinear, dlinear, tsmixer, gru)."""
    kind = getattr(cfg, "kind", None)
    if kind not in _BASELINES:
        raise ConfigError(f"model.kind {kind!r} is not a baseline (one of {', '.join(_BASELINES)})")
    return _BASELINES[kind](sessions, context, horizon, cfg)
