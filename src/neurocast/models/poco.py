"""POCO: population-conditioned forecasting (after Duan et al. 2025).

A per-unit MLP forecaster whose hidden layer is FiLM-modulated by a per-unit vector read
out of a Perceiver that summarises the whole recorded population's recent activity.

1. Tokens: each unit's context (C frames) is cut into C / token_length patches; a token is
   Linear(patch) + u, where u = unit embedding + session embedding + dataset embedding.
   Token times are the patch starts (0, 16, 32 for C = 48).
2. Perceiver with rotary time (head dim split into interleaved pairs; half the pairs carry
   angular frequencies 2 pi / tau_k with periods log-spaced between t_max/1000 and t_max,
   the other half are not rotated):
   * encoder: ``latents`` learned vectors at times evenly spaced over [0, C) cross-attend to
     the window's tokens (queries and keys rotated by their times; values rotated by the
     key time and the output counter-rotated by the query time, so relative time enters the
     values too), then a GEGLU feed-forward block;
   * ``self_attention_layers`` blocks of rotary self-attention + feed-forward among latents
     (dropout on these residual branches);
   * decoder: one query per unit, equal to its identity vector u at time C, cross-attends to
     the latents (rotary on queries and keys, not values), then a feed-forward block.
   The result is one vector e per (window, unit).
3. FiLM MLP: h = ReLU(W_in x + b) over the unit's raw context, alpha = W_a e + b_a,
   beta = W_b e + b_b with W_a, b_a, W_b, b_b zero at initialisation, and
   y = W_out (alpha * h + beta) + b_out (P frames). At initialisation the forecast is the
   constant b_out; the MLP learns as the Perceiver learns to open the gate. The beta term
   is computed as (W_out W_b) e + W_out b_b, which never materialises the (B, D, H) tensor.

All windows of a batch are processed together: a window's tokens are padded to the batch's
largest session and masked in attention (``scaled_dot_product_attention``), no loops
over windows. ``conditioning: none`` is the Perceiver-only ablation (a shared linear
readout of e).

Per-session and per-unit embeddings are the parameters that adapt a trained model to a
new recording (``embedding_names`` lists them). A new session never gets rows in these
tables: test-time training gives it fresh embedding tensors (:func:`~neurocast.models.functional.fast_init`)
and runs the model with them through ``torch.func.functional_call``
(:func:`~neurocast.models.functional.forward_with`), so the trained model's own tensors never change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neurocast.data.forecast_batch import ForecastBatch, SessionTable
from neurocast.errors import ConfigError
from neurocast.models.film import film_readout
from neurocast.models.forecast_base import ForecastModel
from neurocast.schema.forecast import PocoConfig

#: disjoint parameter groups that test-time training can adapt (see neurocast.models.functional):
#: unit embeddings, session embedding, FiLM (alpha, beta), output layer, everything else
ADAPT_GROUPS = ("units", "session", "film", "output", "backbone")


class Rotary(nn.Module):
    """Rotary time embedding on interleaved pairs; the first half of the pairs rotate."""

    def __init__(self, head_dim: int, t_max: float):
        super().__init__()
        pairs = head_dim // 2
        t_min = t_max / 1000.0
        k = torch.arange(0, pairs, 2, dtype=torch.float64)  # pairs/2 rotating slots
        periods = t_min * (t_max / t_min) ** (k / pairs)
        omega = torch.zeros(pairs, dtype=torch.float64)
        omega[: k.numel()] = 2 * math.pi / periods
        self.register_buffer("omega", omega.float(), persistent=False)

    def angles(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (..., pairs) for times t (...)."""
        a = t[..., None].float() * self.omega
        return torch.cos(a), torch.sin(a)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float = 1.0) -> torch.Tensor:
        """Rotate pairs (x[..., 2i], x[..., 2i+1]) of x (B, H, N, dh) by +/- angle (cos, sin: (B, N, pairs))."""
        x2 = x.unflatten(-1, (-1, 2))
        c, s = cos[:, None, :, :], sin[:, None, :, :] * sign
        a, b = x2[..., 0], x2[..., 1]
        return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, rotary: Rotary, rotate_values: bool,
                 dropout: float = 0.0):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.norm_q = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.rotary = rotary
        self.rotate_values = rotate_values
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (B, H, N, dh)

    def forward(self, x, ctx, q_time, k_time, key_mask=None):
        q = self._split(self.to_q(self.norm_q(x)))
        c = self.norm_ctx(ctx)
        k, v = self._split(self.to_k(c)), self._split(self.to_v(c))
        qc, qs = self.rotary.angles(q_time)
        kc, ks = self.rotary.angles(k_time)
        q = Rotary.rotate(q, qc, qs)
        k = Rotary.rotate(k, kc, ks)
        if self.rotate_values:
            v = Rotary.rotate(v, kc, ks)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        if self.rotate_values:
            out = Rotary.rotate(out, qc, qs, sign=-1.0)
        return self.to_out(out.transpose(1, 2).flatten(-2))


class GEGLUFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.drop = nn.Dropout(dropout)
        self.proj_out = nn.Linear(mult * dim, dim)

    def forward(self, x):
        a, b = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(self.drop(a * F.gelu(b)))


class Perceiver(nn.Module):
    def __init__(self, cfg: PocoConfig, context: int):
        super().__init__()
        d = cfg.hidden
        self.rotary = Rotary(cfg.head_dim, cfg.rotary_t_max)
        self.latents = nn.Parameter(torch.randn(cfg.latents, d) * 0.02)
        self.register_buffer("latent_times", torch.arange(cfg.latents, dtype=torch.float32) * (context / cfg.latents),
                             persistent=False)
        self.enc_attn = Attention(d, d, cfg.cross_heads, cfg.head_dim, self.rotary, rotate_values=True)
        self.enc_ff = GEGLUFeedForward(d, cfg.ffn_mult, cfg.ffn_dropout)
        self.self_attn = nn.ModuleList(
            Attention(d, d, cfg.heads, cfg.head_dim, self.rotary, rotate_values=True)
            for _ in range(cfg.self_attention_layers)
        )
        self.self_ff = nn.ModuleList(
            GEGLUFeedForward(d, cfg.ffn_mult, cfg.ffn_dropout) for _ in range(cfg.self_attention_layers)
        )
        self.res_drop = nn.Dropout(cfg.residual_dropout)
        self.dec_attn = Attention(d, d, cfg.cross_heads, cfg.head_dim, self.rotary, rotate_values=False)
        self.dec_ff = GEGLUFeedForward(d, cfg.ffn_mult, cfg.ffn_dropout)
        self.context = context

    def forward(self, tokens, token_times, token_mask, queries):
        """tokens (B, N, d) at token_times (B, N), mask (B, N); queries (B, D, d) -> (B, D, d)."""
        B = tokens.shape[0]
        lat = self.latents.expand(B, -1, -1)
        lt = self.latent_times.expand(B, -1)
        lat = lat + self.enc_attn(lat, tokens, lt, token_times, token_mask)
        lat = lat + self.enc_ff(lat)
        for attn, ff in zip(self.self_attn, self.self_ff):
            lat = lat + self.res_drop(attn(lat, lat, lt, lt))
            lat = lat + self.res_drop(ff(lat))
        qt = torch.full(queries.shape[:2], float(self.context), device=queries.device)
        out = queries + self.dec_attn(queries, lat, qt, lt)
        return out + self.dec_ff(out)


class POCO(ForecastModel):
    def __init__(self, sessions: SessionTable, context: int, horizon: int, cfg: PocoConfig):
        super().__init__(sessions, context, horizon)
        if context % cfg.token_length:
            raise ConfigError(f"model.token_length={cfg.token_length} must divide the context ({context} frames)")
        self.cfg = cfg
        d = cfg.hidden
        self.token_length = cfg.token_length
        self.n_tokens = context // cfg.token_length
        self.unit_emb = nn.Parameter(torch.randn(sessions.n_units, d) * 0.02)
        self.session_emb = nn.Parameter(torch.randn(sessions.n_sessions, d) * 0.02)
        self.dataset_emb = nn.Parameter(torch.randn(sessions.n_datasets, d) * 0.02)
        self.register_buffer("unit_offsets", torch.as_tensor(sessions.offsets()), persistent=False)
        if cfg.learned_init:
            # meta-learned starting point of a new session's embeddings (test-time training)
            self.init_unit = nn.Parameter(torch.randn(d) * 0.02)
            self.init_session = nn.Parameter(torch.randn(d) * 0.02)
        if cfg.learned_inner_lr is not None:
            # Meta-SGD: one learned log step size per adaptable parameter group (ADAPT_GROUPS)
            self.inner_log_lr = nn.Parameter(torch.full((len(ADAPT_GROUPS),), math.log(cfg.learned_inner_lr)))
        self.input_proj = nn.Linear(cfg.token_length, d)
        self.perceiver = Perceiver(cfg, context)
        self.film = cfg.conditioning == "film"
        if self.film:
            layers = [nn.Linear(context, cfg.conditioning_dim), nn.ReLU()]
            for _ in range(cfg.conditioning_layers - 1):
                layers += [nn.Linear(cfg.conditioning_dim, cfg.conditioning_dim), nn.ReLU()]
            self.mlp_in = nn.Sequential(*layers)
            self.alpha = nn.Linear(d, cfg.conditioning_dim)
            self.beta = nn.Linear(d, cfg.conditioning_dim)
            for lin in (self.alpha, self.beta):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
            self.out = nn.Linear(cfg.conditioning_dim, horizon)
            #: compute the FiLM product in row blocks on CPU (False: the reference expression)
            self.fused_film = True
        else:
            self.readout = nn.Linear(d, horizon)

    # ------------------------------------------------------------------ embeddings
    embedding_names = ("unit_emb", "session_emb")

    def identity(self, batch: ForecastBatch) -> torch.Tensor:
        """u (B, D, d) = unit + session + dataset embeddings."""
        u = self.unit_emb[batch.unit_ids]
        if self.cfg.session_embedding:
            u = u + (self.session_emb[batch.session] + self.dataset_emb[batch.dataset])[:, None, :]
        return u

    # ------------------------------------------------------------------ forward
    def condition(self, batch: ForecastBatch) -> torch.Tensor:
        """The per-unit conditioning vector e (B, D, d)."""
        x = batch.x  # (B, C, D)
        B, C, D = x.shape
        u = self.identity(batch)
        patches = x.transpose(1, 2).reshape(B, D, self.n_tokens, self.token_length)
        tokens = self.input_proj(patches) + u[:, :, None, :]  # (B, D, TC, d)
        tokens = tokens.reshape(B, D * self.n_tokens, -1)
        times = (torch.arange(self.n_tokens, device=x.device, dtype=torch.float32) * self.token_length).repeat(D)
        times = times.expand(B, -1)
        mask = batch.unit_mask[:, :, None].expand(B, D, self.n_tokens).reshape(B, -1)
        return self.perceiver(tokens, times, mask, u)

    def _normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-window, per-unit context normalisation (``input_norm``): (x', offset, scale)."""
        mode = self.cfg.input_norm
        one = torch.ones_like(x[:, :1, :])
        if mode == "none":
            return x, torch.zeros_like(one), one
        if mode == "last":
            off = x[:, -1:, :]
            return x - off, off, one
        off = x.mean(dim=1, keepdim=True)
        if mode == "mean":
            return x - off, off, one
        scale = x.std(dim=1, keepdim=True).clamp_min(1e-3)
        return (x - off) / scale, off, scale

    def _gated(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """W_out (alpha(e) * h(x)) for contexts x (B, D, C) and unit vectors e (B, D, d): (B, D, P)."""
        if len(self.mlp_in) == 2 and self.fused_film:
            # one hidden layer: the whole product in row blocks (neurocast.models.film)
            lin = self.mlp_in[0]
            B, D = e.shape[:2]
            y = film_readout(x.reshape(B * D, -1), e.reshape(B * D, -1), lin.weight, lin.bias, self.alpha.weight,
                             self.alpha.bias, self.out.weight)
            return y.unflatten(0, (B, D))
        return F.linear(self.alpha(e) * self.mlp_in(x), self.out.weight)

    def forward(self, batch: ForecastBatch) -> torch.Tensor:
        x, off, scale = self._normalise(batch.x)
        if x is not batch.x:
            batch = ForecastBatch(x, batch.y, batch.unit_mask, batch.session, batch.dataset, batch.unit_ids,
                                  batch.starts)
        e = self.condition(batch)                       # (B, D, d)
        if not self.film:
            y = self.readout(e).transpose(1, 2)         # (B, P, D)
        else:
            # out(alpha(e) * h + beta(e)), with the beta branch folded through the output
            # layer: W_out (W_b e + b_b) = (W_out W_b) e + W_out b_b. Same function and
            # gradients, without the (B, D, H) beta tensor (a quarter of a step's work).
            w_beta = self.out.weight @ self.beta.weight                     # (P, d)
            b_beta = self.out.weight @ self.beta.bias + self.out.bias       # (P,)
            y = self._gated(batch.x.transpose(1, 2), e) + F.linear(e, w_beta, b_beta)
            y = y.transpose(1, 2)
        return y * scale + off

