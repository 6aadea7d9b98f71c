"""The strongest simple baselines of a latent-dynamics model, fitted under its observation constraint.

Every baseline is fitted on the *observed* entries of the training range only (what a real
experiment with the same acquisition would have recorded), in the model's normalised units,
and predicts the same frames as the model's roll-outs:

* **stimulus-only ridge** (:class:`StimulusRidge`): activity at frame t from the stimulus of the
  ``lags`` frames before it (t-1 .. t-K; frame t holds the state *before* stimulus t acts),
  compressed to its leading spatial principal components. It knows nothing of the state:
  whatever it explains is a fixed filter of the input.
* **linear dynamical model in a PCA latent** (:class:`PCALinearDynamics`): z = P'x on the
  leading ``dims`` principal components of the observed training frames, and
  ``z(t+tu) = A z(t) + B u(t) + c`` fitted on observed pairs tu apart (u = the stimulus
  components of the tu frames in between); rolled out at tu from the observation the model
  starts from, decoded by P, linearly interpolated between its own points.

Ridge penalties are chosen on the last ``holdout`` fraction of the training range (observed
frames), from a grid. Staggered acquisition: the stimulus ridge is fitted per phase group
(each neuron on the frames it was observed at); the linear dynamics on the per-neuron
interpolation of the observed samples (the model's own input).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHAS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # ridge penalties tried (x the mean diagonal)


@dataclass
class BaselineSpec:
    stimulus_lags: int = 20
    stimulus_components: int = 32
    lds_dims: int = 64
    holdout: float = 0.1
    chunk: int = 65536
    pca_frames: int = 8192


def _boundary_ok(t: np.ndarray, back: int, boundaries: np.ndarray) -> np.ndarray:
    """True where no recording boundary b lies in (t - back, t] (the lag window stays in one sequence)."""
    if boundaries.size == 0 or back <= 0:
        return np.ones(t.shape, dtype=bool)
    nxt = np.searchsorted(boundaries, t - back, side="right")
    has = nxt < boundaries.size
    ok = np.ones(t.shape, dtype=bool)
    ok[has] = boundaries[nxt[has]] > t[has]
    return ok


def _solve(xtx: np.ndarray, xty: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge solution; the penalty is alpha x the mean diagonal (not on the last, constant feature)."""
    d = xtx.shape[0]
    lam = alpha * float(np.trace(xtx[:-1, :-1])) / max(d - 1, 1)
    reg = np.full(d, lam)
    reg[-1] = 0.0
    return np.linalg.solve(xtx + np.diag(reg) + 1e-9 * np.eye(d), xty)


def _heldout_sse(w: np.ndarray, stats: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """Sum of squared errors of ``w`` from sufficient statistics (X'X, X'Y, diag Y'Y)."""
    xtx, xty, yty = stats
    return float(yty.sum() - 2 * np.sum(w * xty) + np.sum(w * (xtx @ w)))


class _Stats:
    def __init__(self, d_in: int, d_out: int):
        self.xtx = np.zeros((d_in, d_in))
        self.xty = np.zeros((d_in, d_out))
        self.yty = np.zeros(d_out)

    def add(self, X: np.ndarray, Y: np.ndarray) -> None:
        self.xtx += X.T @ X
        self.xty += X.T @ Y
        self.yty += (Y * Y).sum(0)

    def tuple(self):
        return self.xtx, self.xty, self.yty


class StimulusProjection:
    """Leading spatial principal components of the (normalised) training stimulus."""

    def __init__(self, frames: np.ndarray, components: int):
        S = frames.shape[1]
        if components >= S:
            self.P = np.eye(S)
        else:
            cov = np.cov(frames.astype(np.float64), rowvar=False)
            vals, vecs = np.linalg.eigh(cov)
            self.P = vecs[:, ::-1][:, :components]

    @property
    def dims(self) -> int:
        return int(self.P.shape[1])

    def __call__(self, s: np.ndarray) -> np.ndarray:
        return s.astype(np.float64) @ self.P


def lagged(u: np.ndarray, lags: int) -> np.ndarray:
    """(T, C) components -> (T, lags*C + 1) features [u(t-1), ..., u(t-lags), 1]; rows t < lags are zero-padded."""
    T, C = u.shape
    out = np.zeros((T, lags * C + 1))
    for k in range(1, lags + 1):
        out[k:, (k - 1) * C : k * C] = u[: T - k]
    out[:, -1] = 1.0
    return out


class StimulusRidge:
    """Activity from the stimulus history alone (see the module docstring)."""

    name = "stimulus_ridge"

    def __init__(self, windows, spec: BaselineSpec, proj: StimulusProjection):
        self.spec, self.proj = spec, proj
        self.lags = spec.stimulus_lags
        acq, rec = windows.acq, windows.rec
        N = rec.N
        groups = _phase_groups(acq, N)
        d = self.lags * proj.dims + 1
        t0, t1 = windows.t0, windows.t1
        split = t1 - max(1, int(round(spec.holdout * (t1 - t0))))
        fit = {g: _Stats(d, N) for g in groups}
        hold = {g: _Stats(d, N) for g in groups}
        for c0 in range(t0, t1, spec.chunk):
            c1 = min(t1, c0 + spec.chunk)
            a = max(0, c0 - self.lags)
            x = windows.norm.apply(rec.read(c0, c1, channel=windows.channel)).astype(np.float64)
            s = windows.stim_norm.apply(rec.read_stimulus(a, c1)) if windows.stim_norm else rec.read_stimulus(a, c1)
            F = lagged(proj(s), self.lags)[c0 - a :]
            t = np.arange(c0, c1)
            ok = _boundary_ok(t, self.lags, rec.boundaries) & (t - self.lags >= 0)
            for g, (rows_of, _cols) in groups.items():
                sel = ok & rows_of(t)
                for stats, part in ((fit[g], sel & (t < split)), (hold[g], sel & (t >= split))):
                    if part.any():
                        stats.add(F[part], x[part])
        self.W = np.zeros((d, N))
        self.alpha = {}
        for g, (_, cols) in groups.items():
            best = None
            for alpha in ALPHAS:
                w = _solve(fit[g].xtx, fit[g].xty[:, cols], alpha)
                sse = _heldout_sse(w, (hold[g].xtx, hold[g].xty[:, cols], hold[g].yty[cols]))
                if best is None or sse < best[0]:
                    best = (sse, alpha)
            merged = _Stats(d, N)
            merged.xtx, merged.xty = fit[g].xtx + hold[g].xtx, fit[g].xty + hold[g].xty
            self.W[:, cols] = _solve(merged.xtx, merged.xty[:, cols], best[1])
            self.alpha[g] = best[1]

    def predict(self, stim_norm: np.ndarray, first: int, n: int) -> np.ndarray:
        """Frames first .. first+n-1 of a block of normalised stimulus (the block holds >= lags frames before
        ``first``)."""
        F = lagged(self.proj(stim_norm), self.lags)[first : first + n]
        return F @ self.W


class PCALinearDynamics:
    """z(t+tu) = A z(t) + B u(t) + c in a PCA latent (see the module docstring)."""

    name = "pca_lds"

    def __init__(self, windows, spec: BaselineSpec, proj: StimulusProjection):
        acq, rec = windows.acq, windows.rec
        self.tu = tu = acq.tu
        self.proj = proj
        t0, t1 = windows.t0, windows.t1
        staggered = acq.mode == "staggered_random"
        grid = acq.mode == "time_aligned"
        N = rec.N

        def frames(c0, c1):
            x = windows.norm.apply(rec.read(c0, c1, channel=windows.channel))
            if staggered:
                x = acq.interpolate(x, c0)
            return x.astype(np.float64)

        def observed(t):
            return ((t - acq.origin) % tu == 0) if grid else np.ones(t.shape, dtype=bool)

        # principal components of the observed training frames (a seeded subsample of at most
        # ``pca_frames`` frames, randomized SVD: cheap at 45,000 neurons too)
        obs = np.arange(t0, t1)
        obs = obs[observed(obs)]
        take = np.sort(np.random.default_rng(0).choice(obs, size=min(obs.size, spec.pca_frames), replace=False))
        sample = np.concatenate([
            frames(c0, min(t1, c0 + spec.chunk))[take[(take >= c0) & (take < c0 + spec.chunk)] - c0]
            for c0 in range(t0, t1, spec.chunk)
        ])
        self.mean = mean = sample.mean(0)
        self.dims = d = int(min(spec.lds_dims, N, sample.shape[0]))
        self.P = _top_components(sample - mean, d)
        # pairs (t, t + tu), both observed, in one sequence
        du = tu * proj.dims
        k_in = d + du + 1
        split = t1 - max(1, int(round(spec.holdout * (t1 - t0))))
        fit, hold = _Stats(k_in, d), _Stats(k_in, d)
        step = spec.chunk - spec.chunk % tu if spec.chunk > tu else tu
        for c0 in range(t0, t1, step):
            c1 = min(t1, c0 + step + tu)
            x = frames(c0, c1)
            s = windows.stim_norm.apply(rec.read_stimulus(c0, c1)) if windows.stim_norm else rec.read_stimulus(c0, c1)
            u = proj(s)
            t = np.arange(c0, min(c1 - tu, c0 + step))
            ok = observed(t) & _boundary_ok(t + tu, tu, rec.boundaries)
            if not ok.any():
                continue
            loc = t[ok] - c0
            z = (x - mean) @ self.P
            U = np.stack([u[i : i + tu].ravel() for i in loc])
            X = np.concatenate([z[loc], U, np.ones((loc.size, 1))], axis=1)
            Y = z[loc + tu]
            for stats, part in ((fit, t[ok] < split), (hold, t[ok] >= split)):
                if part.any():
                    stats.add(X[part], Y[part])
        best = None
        for alpha in ALPHAS:
            w = _solve(fit.xtx, fit.xty, alpha)
            sse = _heldout_sse(w, hold.tuple())
            if best is None or sse < best[0]:
                best = (sse, alpha)
        self.alpha = best[1]
        W = _solve(fit.xtx + hold.xtx, fit.xty + hold.xty, self.alpha)
        self.A, self.B, self.c = W[:d], W[d : d + du], W[-1]

    def rollout(self, x0: np.ndarray, stim_norm: np.ndarray, n: int, steps: np.ndarray | None = None) -> np.ndarray:
        """Predictions (n, N) of frames 1..n after a start whose observation is ``x0`` (N,),
        driven by ``stim_norm`` (n frames from the start); batched: x0 (b, N), stim (b, n, S) -> (b, n, N).
        ``steps`` (1-based) restricts the output to those steps."""
        single = x0.ndim == 1
        x0 = np.atleast_2d(x0).astype(np.float64)
        stim = stim_norm[None] if single else stim_norm
        tu = self.tu
        u = self.proj(stim.reshape(-1, stim.shape[-1])).reshape(stim.shape[0], stim.shape[1], -1)
        k_max = -(-n // tu)
        pad = k_max * tu - u.shape[1]
        if pad > 0:
            u = np.concatenate([u, np.repeat(u[:, -1:], pad, axis=1)], axis=1)
        z = (x0 - self.mean) @ self.P
        points = [z]
        for k in range(k_max):
            z = z @ self.A + u[:, k * tu : (k + 1) * tu].reshape(u.shape[0], -1) @ self.B + self.c
            points.append(z)
        pts = np.stack(points, axis=1)  # (b, k_max + 1, d) at steps 0, tu, 2tu, ...
        steps = np.arange(1, n + 1) if steps is None else np.asarray(steps)
        j = np.minimum(steps // tu, k_max - 1) if tu > 1 else steps - 1
        w = ((steps - j * tu) / tu)[None, :, None] if tu > 1 else np.ones((1, steps.size, 1))
        zs = (1 - w) * pts[:, j] + w * pts[:, j + 1]
        out = zs @ self.P.T + self.mean
        return out[0] if single else out


def _top_components(x: np.ndarray, d: int) -> np.ndarray:
    """(N, d) leading principal axes of the centred rows ``x`` (exact, from the N x N covariance,
    up to 4,000 columns; randomized SVD with a fixed seed above)."""
    if x.shape[1] <= 4000:
        _, vecs = np.linalg.eigh(x.T @ x)
        return vecs[:, ::-1][:, :d].copy()
    import torch

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        _, _, V = torch.svd_lowrank(torch.from_numpy(x), q=min(d + 10, min(x.shape)), niter=4)
    finally:
        torch.random.set_rng_state(state)
    return V[:, :d].numpy().astype(np.float64)


def _phase_groups(acq, N: int) -> dict:
    """{group: (row selector of absolute frames, neuron columns)} for the acquisition's observed entries."""
    cols_all = np.arange(N)
    if acq.mode == "all":
        return {0: (lambda t: np.ones(t.shape, dtype=bool), cols_all)}
    if acq.mode == "time_aligned":
        return {0: (lambda t: (t - acq.origin) % acq.tu == 0, cols_all)}
    out = {}
    for p in np.unique(acq.phases):
        out[int(p)] = ((lambda t, p=int(p): (t - acq.origin - p) % acq.tu == 0), np.flatnonzero(acq.phases == p))
    return out


class LatentBaselines:
    """Both fitted baselines of a latent task's training range."""

    def __init__(self, train_windows, spec: BaselineSpec | None = None):
        self.spec = spec or BaselineSpec()
        w = train_windows
        self.has_stimulus = w.use_stimulus and w.rec.stimulus is not None
        if self.has_stimulus:
            a, b = w.t0, min(w.t1, w.t0 + self.spec.chunk)
            s = w.rec.read_stimulus(a, b)
            s = w.stim_norm.apply(s) if w.stim_norm is not None else s
            self.proj = StimulusProjection(s, self.spec.stimulus_components)
            self.stimulus = StimulusRidge(w, self.spec, self.proj)
        else:
            self.proj = StimulusProjection(np.zeros((2, 1)), 1)
            self.stimulus = None
        self.lds = PCALinearDynamics(w, self.spec, self.proj) if self.has_stimulus else None

    def describe(self) -> dict:
        out = {"stimulus_lags": self.spec.stimulus_lags, "stimulus_components": self.proj.dims}
        if self.stimulus is not None:
            out["stimulus_ridge_alpha"] = {str(k): v for k, v in self.stimulus.alpha.items()}
        if self.lds is not None:
            out["lds_dims"] = self.lds.dims
            out["lds_alpha"] = self.lds.alpha
        return out
