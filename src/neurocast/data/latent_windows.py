"""Windows of one recording for latent-dynamics training, streamed in time chunks.

A window starting at frame s spans frames s .. s + T (T = time_units x evolve_multiple_steps).
Windows never cross the end of their split range, a chunk, or a recording boundary (a
frame where the recording restarts); in ``time_aligned`` mode they start on the
observation grid. Chunks of at most ``chunk_frames`` frames are read from the recording
(a store on disk is read only there), normalised, moved to the device and, in
``staggered_random`` mode, interpolated per neuron from its observed samples.

Unobserved entries are never replaced by something plausible: they keep whatever the
recording holds, and the batching only ever reads observed frames (time_aligned) or
masks them out (staggered), so a test can poison them with NaN.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from neurocast.data.acquisition import Acquisition
from neurocast.data.normalization import Normalizer
from neurocast.data.recording import Recording
from neurocast.errors import DataError


@dataclass
class Chunk:
    t0: int                       # absolute first frame
    t1: int                       # absolute end frame (exclusive)
    x: torch.Tensor               # (T, N) normalised activity (unobserved entries untouched)
    x_in: torch.Tensor            # (T, N) encoder input: x, or the staggered interpolation
    mask: torch.Tensor | None     # (T, N) observed entries (None: all, or whole frames in time_aligned)
    stim: torch.Tensor | None     # (T, S) normalised stimulus
    starts: np.ndarray            # valid local window starts


@dataclass
class Batch:
    x0: torch.Tensor              # (b, N) encoder input at the window start
    stim: torch.Tensor | None     # (b, T, S) stimulus driving steps 0..T-1
    steps: list[int]              # evolver steps with a target (1-based; 0 = the start frame)
    targets: torch.Tensor         # (b, len(steps), N)
    masks: torch.Tensor | None    # (b, len(steps), N) observed entries, or None (all observed)
    recon: torch.Tensor           # (b, N) reconstruction target (observed value at the start)
    recon_mask: torch.Tensor | None
    starts: np.ndarray            # absolute start frames (for diagnostics)


class LatentWindows:
    def __init__(
        self,
        rec: Recording,
        channel: str,
        t0: int,
        t1: int,
        acquisition: Acquisition,
        window: int,
        normalizer: Normalizer,
        stim_normalizer: Normalizer | None,
        chunk_frames: int,
        device: torch.device,
        use_stimulus: bool = True,
    ):
        if not 0 <= t0 < t1 <= rec.T:
            raise DataError(f"range [{t0}, {t1}) is outside recording {rec.session!r} of T={rec.T} frames")
        self.rec, self.channel = rec, channel
        self.t0, self.t1 = int(t0), int(t1)
        self.acq = acquisition
        self.window = int(window)
        self.norm, self.stim_norm = normalizer, stim_normalizer
        self.chunk_frames = max(int(chunk_frames), self.window + 1)
        self.device = device
        self.use_stimulus = use_stimulus and rec.stimulus is not None
        self.boundaries = rec.boundaries
        if self.n_valid_starts(self.t0, self.t1) == 0:
            raise DataError(
                f"recording {rec.session!r} frames [{t0}, {t1}) hold no window of {self.window + 1} frames"
                f" (time_units x evolve_multiple_steps = {self.window}); use a longer range or fewer steps"
            )
        self._cache: Chunk | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ valid starts
    def valid_starts(self, c0: int, c1: int) -> np.ndarray:
        """Absolute window starts inside [c0, c1) (window end frame included in the range)."""
        last = c1 - 1 - self.window
        if last < c0:
            return np.zeros(0, dtype=np.int64)
        s = np.arange(c0, last + 1)
        if self.acq.aligned_starts:
            s = s[(s - self.acq.origin) % self.acq.tu == 0]
        if self.boundaries.size and s.size:
            # a boundary b inside (s, s + window] breaks the window
            nxt = np.searchsorted(self.boundaries, s, side="right")
            has = nxt < self.boundaries.size
            bad = np.zeros(s.shape, dtype=bool)
            bad[has] = self.boundaries[nxt[has]] <= s[has] + self.window
            s = s[~bad]
        return s

    def n_valid_starts(self, c0: int | None = None, c1: int | None = None) -> int:
        return int(self.valid_starts(self.t0 if c0 is None else c0, self.t1 if c1 is None else c1).size)

    # ------------------------------------------------------------------ chunks
    def load_chunk(self, c0: int, c1: int) -> Chunk:
        raw = self.rec.read(c0, c1, channel=self.channel)
        x = self.norm.apply(raw)
        staggered = self.acq.mode == "staggered_random"
        mask_np = self.acq.mask(c0, c1) if staggered else None  # aligned windows touch grid frames only
        x_in = self.acq.interpolate(x, c0) if staggered else None
        stim = None
        if self.use_stimulus:
            s = self.rec.read_stimulus(c0, c1)
            stim = self.stim_norm.apply(s) if self.stim_norm is not None else s
        dev = self.device
        xt = torch.from_numpy(x).to(dev)
        return Chunk(
            t0=c0,
            t1=c1,
            x=xt,
            x_in=xt if x_in is None else torch.from_numpy(x_in).to(dev),
            mask=None if mask_np is None else torch.from_numpy(mask_np).to(dev),
            stim=None if stim is None else torch.from_numpy(stim).to(dev),
            starts=self.valid_starts(c0, c1) - c0,
        )

    def whole(self) -> Chunk:
        """The whole range as one chunk (cached); for ranges up to chunk_frames."""
        if self._cache is None:
            self._cache = self.load_chunk(self.t0, min(self.t1, self.t0 + self.chunk_frames))
        return self._cache

    def epoch_chunks(self, rng: np.random.Generator, n_batches: int, batch_size: int):
        """Yield (chunk, number of batches to draw from it) until n_batches are planned."""
        if self.t1 - self.t0 <= self.chunk_frames:
            yield self.whole(), n_batches
            return
        span = self.t1 - self.t0 - self.chunk_frames
        step = self.acq.tu
        plan: list[int] = []
        remaining = n_batches
        while remaining > 0:
            c0 = self.t0 + int(rng.integers(0, span // step + 1)) * step
            plan.append(c0)
            per = max(1, self.n_valid_starts(c0, c0 + self.chunk_frames) // batch_size)
            remaining -= per
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurocast-chunks")
        remaining = n_batches
        future: Future = self._pool.submit(self.load_chunk, plan[0], plan[0] + self.chunk_frames)
        for i in range(len(plan)):
            chunk = future.result()
            if i + 1 < len(plan):  # read the next chunk while this one trains
                future = self._pool.submit(self.load_chunk, plan[i + 1], plan[i + 1] + self.chunk_frames)
            per = min(remaining, max(1, chunk.starts.size // batch_size))
            remaining -= per
            yield chunk, per

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def make_batch(chunk: Chunk, local_starts: np.ndarray, steps: list[int], window: int, staggered: bool) -> Batch:
    """Gather a batch of windows from a chunk (on the chunk's device)."""
    dev = chunk.x.device
    s = torch.as_tensor(local_starts, device=dev, dtype=torch.long)
    x0 = chunk.x_in[s]
    stim = None
    if chunk.stim is not None:
        idx = s[:, None] + torch.arange(window, device=dev)[None, :]
        stim = chunk.stim[idx]
    if staggered:
        all_steps = list(range(0, window + 1))
        idx = s[:, None] + torch.as_tensor(all_steps, device=dev)[None, :]
        targets, masks = chunk.x[idx], chunk.mask[idx]
        return Batch(x0, stim, all_steps[1:], targets[:, 1:], masks[:, 1:], targets[:, 0], masks[:, 0],
                     local_starts + chunk.t0)
    idx = s[:, None] + torch.as_tensor(steps, device=dev)[None, :]
    return Batch(x0, stim, list(steps), chunk.x[idx], None, chunk.x[s], None, local_starts + chunk.t0)
