"""Sessions, splits and windows for multi-session forecasting.

Every session (one Recording) goes through, in order:

1. optional resampling to ``resample_dt`` (linear interpolation on its own time grid);
   sessions of one dataset must then share one frame interval (else a clear error);
2. optional temporal downsampling by block averaging;
3. splitting: the session is cut into blocks of ``block_length`` frames (the last block
   absorbs the remainder), each block split 60/20/20 (configurable) into consecutive
   train / val / test pieces; recording boundaries also cut pieces;
4. per-unit normalisation fitted on the **training pieces only** (z-score by default;
   the anchor fitted it on whole recordings, leaking validation statistics);
5. optional filtering inside each piece separately (zero-phase or causal Butterworth), so
   no filter ever carries information across a split boundary;
6. optional PCA fitted on the training pieces only (scores are not whitened).

``normalization_fit: whole_recording`` reproduces the published POCO protocol instead:
steps 4-6 use every frame of the session (filters run over each continuous segment of the
recording). It leaks, and :func:`normalization_protocol` says so wherever a result is written.

Windows of ``context + horizon`` frames lie inside one piece (never across a block,
split or recording boundary); a piece of n frames gives n - (C + P) + 1 windows at stride 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from neurocast.data.forecast_batch import ForecastBatch, SessionTable
from neurocast.data.recording import Recording
from neurocast.errors import ConfigError, DataError
from neurocast.schema.forecast import FilterSpec, ForecastData

SPLITS = ("train", "val", "test")


@dataclass
class Session:
    name: str                      # "<dataset>/<session>"
    dataset: int
    data: np.ndarray               # (T, D) preprocessed float32
    dt: float
    pieces: dict[str, list[tuple[int, int]]]
    units: list[str]
    held_out: bool = False
    index: int = -1                # row in the model's session table (-1 until assigned)
    stats: dict = field(default_factory=dict)

    @property
    def T(self) -> int:
        return int(self.data.shape[0])

    @property
    def D(self) -> int:
        return int(self.data.shape[1])

    def windows(self, split: str, length: int, stride: int = 1) -> np.ndarray:
        """Start frames of every window of ``length`` frames inside the split's pieces."""
        starts = [np.arange(a, b - length + 1, stride) for a, b in self.pieces[split] if b - a >= length]
        return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------- preprocessing


def resample(rec: Recording, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(activity on the new grid, boundaries) by linear interpolation on the recording's time axis."""
    x = rec.read()
    t = rec.time - rec.time[0] if rec.time is not None else np.arange(rec.T) * rec.dt
    new_t = np.arange(0.0, t[-1] + 1e-9, dt)
    out = np.empty((new_t.size, x.shape[1]), dtype=np.float32)
    for j in range(x.shape[1]):
        out[:, j] = np.interp(new_t, t, x[:, j])
    bounds = np.searchsorted(new_t, t[rec.boundaries]) if rec.boundaries.size else np.zeros(0, np.int64)
    return out, bounds[(bounds > 0) & (bounds < new_t.size)]


def block_average(x: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return x
    n = x.shape[0] // k
    return x[: n * k].reshape(n, k, -1).mean(axis=1).astype(np.float32)


def split_pieces(T: int, block: int, fractions: tuple[float, float, float], boundaries: np.ndarray) -> dict[str, list]:
    n_blocks = max(1, T // block)
    edges = [i * block for i in range(n_blocks)] + [T]
    pieces: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
    cuts = np.asarray(boundaries, dtype=np.int64)
    for b0, b1 in zip(edges[:-1], edges[1:]):
        n = b1 - b0
        a = b0
        for split, last in zip(SPLITS, (False, False, True)):
            b = b1 if last else b0 + int(round(sum(fractions[: SPLITS.index(split) + 1]) * n))
            if b > a:
                inner = cuts[(cuts > a) & (cuts < b)].tolist()
                for p0, p1 in zip([a, *inner], [*inner, b]):
                    pieces[split].append((int(p0), int(p1)))
            a = b
    return pieces


def filter_pieces(x: np.ndarray, pieces: list[tuple[int, int]], spec: FilterSpec, dt: float) -> np.ndarray:
    from scipy import signal

    if spec.kind == "none":
        return x
    nyq = 0.5 / dt
    if spec.kind == "lowpass":
        if spec.high_hz is None:
            raise ConfigError("data.filter.high_hz is needed for a lowpass filter")
        wn, btype = spec.high_hz / nyq, "lowpass"
    elif spec.kind == "highpass":
        if spec.low_hz is None:
            raise ConfigError("data.filter.low_hz is needed for a highpass filter")
        wn, btype = spec.low_hz / nyq, "highpass"
    else:
        if spec.low_hz is None or spec.high_hz is None:
            raise ConfigError("data.filter.low_hz and high_hz are needed for a bandpass filter")
        wn, btype = [spec.low_hz / nyq, spec.high_hz / nyq], "bandpass"
    if np.any(np.asarray(wn) >= 1):
        raise ConfigError(f"data.filter cut-off must be below the Nyquist frequency {nyq:.3g} Hz")
    sos = signal.butter(spec.order, wn, btype=btype, output="sos")
    out = x.copy()
    pad = 3 * (2 * len(sos) + 1)
    for a, b in pieces:
        seg = x[a:b].astype(np.float64)
        if spec.zero_phase and (b - a) > pad:
            out[a:b] = signal.sosfiltfilt(sos, seg, axis=0)
        else:
            out[a:b] = signal.sosfilt(sos, seg, axis=0)
    return out.astype(np.float32)


def normalization_protocol(cfg: ForecastData) -> dict:
    """How the session statistics were fitted; recorded in every summary and report of a run."""
    leaking = cfg.normalization_fit == "whole_recording"
    note = ("LEAKING: normalisation, PCA and filters fitted on whole recordings (the published POCO protocol), "
            "so validation and test statistics enter the inputs; not comparable with normalization_fit: train"
            if leaking else "normalisation, PCA and filters fitted on training frames only")
    return {"normalization_fit": cfg.normalization_fit, "leaking": leaking, "note": note}


def _fit_frames(cfg: ForecastData, pieces: dict[str, list], T: int, bounds: np.ndarray) -> tuple[np.ndarray, list]:
    """(rows the statistics are fitted on, spans filters run over) for the chosen protocol."""
    if cfg.normalization_fit == "whole_recording":
        edges = [0, *np.asarray(bounds, dtype=np.int64).tolist(), T]
        return np.arange(T), list(zip(edges[:-1], edges[1:]))
    rows = np.concatenate([np.arange(a, b) for a, b in pieces["train"]]) if pieces["train"] else np.zeros(0, int)
    return rows, [p for s in SPLITS for p in pieces[s]]


def prepare_sessions(
    datasets: list[tuple[str, list[Recording], float | None]],
    cfg: ForecastData,
) -> list[Session]:
    """Preprocess every recording of every dataset; ``datasets`` = [(name, recordings, resample_dt)]."""
    L = cfg.context + cfg.horizon
    held = set(cfg.held_out_sessions)
    sessions: list[Session] = []
    known = set()
    for d_index, (dname, recs, resample_dt) in enumerate(datasets):
        if not recs:
            raise DataError(f"dataset {dname!r} has no sessions")
        dts = {}
        prepared = []
        for rec in recs:
            if resample_dt is not None:
                x, bounds = resample(rec, resample_dt)
                dt = resample_dt
            else:
                x, bounds, dt = rec.read(), rec.boundaries, rec.dt
            dts[rec.session] = dt
            prepared.append((rec, x, bounds, dt))
        ref = next(iter(dts.values()))
        odd = {s: v for s, v in dts.items() if abs(v - ref) > 0.01 * ref}
        if odd:
            a, b = next(iter(dts.items())), next(iter(odd.items()))
            raise DataError(
                f"dataset {dname!r}: sessions have different frame intervals ({a[1]:.4g} s in {a[0]!r}, "
                f"{b[1]:.4g} s in {b[0]!r}); set its resample_dt to put them on one grid"
            )
        for rec, x, bounds, dt in prepared:
            name = f"{dname}/{rec.session}"
            k = cfg.downsample
            x = block_average(x, k)
            bounds = np.unique(np.asarray(bounds) // k)
            dt = dt * k
            T = x.shape[0]
            if T < L:
                raise DataError(
                    f"session {name!r} has {T} frames (after downsampling), fewer than context + horizon = {L}"
                )
            pieces = split_pieces(T, cfg.block_length, cfg.split, bounds)
            if not pieces["train"]:
                raise DataError(f"session {name!r} has no training frames")
            fit_rows, filter_spans = _fit_frames(cfg, pieces, T, bounds)
            mean = x[fit_rows].mean(0)
            std = x[fit_rows].std(0)
            if cfg.normalization == "zscore":
                x = (x - mean) / np.where(std > 1e-8, std, 1.0)
            elif cfg.normalization == "center":
                x = x - mean
            x = filter_pieces(x.astype(np.float32), filter_spans, cfg.filter, dt)
            units = [str(u) for u in rec.neuron_ids]
            stats = {"mean": mean, "std": std, "normalization_fit": cfg.normalization_fit}
            if cfg.pca_components:
                k_pc = min(cfg.pca_components, x.shape[1])
                xt = x[fit_rows] - x[fit_rows].mean(0)
                _, _, vt = np.linalg.svd(xt.astype(np.float64), full_matrices=False)
                comps = vt[:k_pc].T.astype(np.float32)
                x = (x - x[fit_rows].mean(0)) @ comps
                units = [f"pc{i}" for i in range(k_pc)]
                stats["pca_components"] = comps
            s = Session(name, d_index, np.ascontiguousarray(x, dtype=np.float32), dt, pieces, units,
                        held_out=name in held or rec.session in held, stats=stats)
            if not s.held_out and s.windows("train", L).size == 0:
                raise DataError(
                    f"session {name!r} has no training window of {L} frames (training pieces: "
                    f"{[b - a for a, b in pieces['train']]} frames); lower context/horizon or raise block_length"
                )
            sessions.append(s)
            known.update({name, rec.session})
    missing = held - known
    if missing:
        raise ConfigError(f"data.held_out_sessions: {sorted(missing)[0]!r} is not a session of the data")
    for d_index, (dname, _, _) in enumerate(datasets):
        if not any(s.dataset == d_index and not s.held_out for s in sessions):
            raise DataError(f"dataset {dname!r} has no training session (all held out?)")
    return sessions


def session_table(sessions: list[Session], n_datasets: int) -> SessionTable:
    """Table of the training sessions (held-out ones excluded); assigns Session.index."""
    train = [s for s in sessions if not s.held_out]
    for i, s in enumerate(train):
        s.index = i
    return SessionTable([s.D for s in train], [s.dataset for s in train], [s.name for s in train], n_datasets)


# ---------------------------------------------------------------------------- batches


class WindowSampler:
    """Windows of one dataset's training sessions, drawn without replacement per pass."""

    def __init__(self, sessions: list[Session], length: int, stride: int, rng: np.random.Generator):
        self.entries = np.concatenate([
            np.stack([np.full(w.size, i), w], axis=1) for i, s in enumerate(sessions)
            if (w := s.windows("train", length, stride)).size
        ])
        self.sessions = sessions
        self.rng = rng
        self.order = np.zeros(0, dtype=np.int64)

    def draw(self, n: int) -> np.ndarray:
        """(n, 2) array of (session position, start)."""
        while self.order.size < n:
            self.order = np.concatenate([self.order, self.rng.permutation(len(self.entries))])
        take, self.order = self.order[:n], self.order[n:]
        return self.entries[take]


def make_batch(
    sessions: list[Session],
    picks: np.ndarray,
    context: int,
    horizon: int,
    tensors: dict[str, torch.Tensor],
    unit_offsets: dict[str, int],
    device: torch.device,
    session_index: dict[str, int] | None = None,
) -> ForecastBatch:
    """A padded batch from (session position, start) pairs; ``tensors`` holds each session's data on device."""
    L = context + horizon
    B = len(picks)
    D = max(sessions[int(p)].D for p in picks[:, 0])
    x = torch.zeros(B, L, D, device=device)
    mask = torch.zeros(B, D, dtype=torch.bool, device=device)
    unit_ids = torch.zeros(B, D, dtype=torch.long, device=device)
    sess = torch.zeros(B, dtype=torch.long, device=device)
    dset = torch.zeros(B, dtype=torch.long, device=device)
    ar = torch.arange(L, device=device)
    for pos in np.unique(picks[:, 0]):
        s = sessions[int(pos)]
        rows = np.flatnonzero(picks[:, 0] == pos)
        rows_t = torch.as_tensor(rows, device=device)
        starts = torch.as_tensor(picks[rows, 1], device=device)
        x[rows_t, :, : s.D] = tensors[s.name][starts[:, None] + ar[None, :]]
        mask[rows_t, : s.D] = True
        unit_ids[rows_t, : s.D] = unit_offsets[s.name] + torch.arange(s.D, device=device)
        sess[rows_t] = (session_index or {}).get(s.name, s.index)
        dset[rows_t] = s.dataset
    return ForecastBatch(x[:, :context], x[:, context:], mask, sess, dset, unit_ids, picks[:, 1].copy())
