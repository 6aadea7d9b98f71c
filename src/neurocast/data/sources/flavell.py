"""Flavell-lab whole-brain C. elegans GCaMP recordings (processed HDF5, one file per animal).

Layout read (as published in flavell-lab/NSM_5HTR_analysis, ``data/``):
``gcamp/trace_array`` (T, N) z-scored activity, ``timing/timestamp_confocal`` (T,) seconds,
``behavior/*`` per-frame behaviour (kept as covariates), ``gcamp/idx_splits`` the frame ranges
(1-based, inclusive; stored by the lab's Julia exporter as a (2, k) array of starts and ends)
of the k recordings joined in the file: each range after the first starts a new segment.

Trimmed recordings: where the trace array is shorter than the timestamp vector, ``idx_splits``
says which timestamp frames the trace holds (its ranges must cover exactly T frames); those
frames, their timestamps and behaviour are loaded and provenance says so. Anything else is
an error naming the three lengths. Options:

* ``trace`` - which activity array: ``trace_array`` (default), ``trace_array_original``
  or ``traces_array_F_F20``;
* ``behavior`` - keep behaviour covariates (default True). All-NaN behaviour arrays are
  dropped (noted in provenance); partly missing ones keep NaN as "missing".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.data.recording import Recording
from neurocast.data.sources import register_source
from neurocast.data.sources.checks import finite, make_recording
from neurocast.errors import DataError

TRACES = ("trace_array", "trace_array_original", "traces_array_F_F20")


def open_hdf5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(", 1)[-1].rstrip(")") if "(" in str(exc) else str(exc)
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {reason}") from None


@register_source
class FlavellHDF5:
    name = "flavell"
    description = "Flavell-lab C. elegans HDF5 (gcamp/trace_array, timing/timestamp_confocal)"
    patterns = "*.h5, *.hdf5"

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in (".h5", ".hdf5")

    def load(self, path: Path, options: Mapping[str, Any]) -> list[Recording]:
        trace = options.get("trace") or "trace_array"
        if trace not in TRACES:
            raise DataError(f"flavell: option trace={trace!r} is not one of {', '.join(TRACES)}")
        with open_hdf5(path) as f:
            key = f"gcamp/{trace}"
            if key not in f:
                raise DataError(f"{path}: no dataset {key!r} (is this a Flavell-lab processed file?)")
            try:
                activity = np.asarray(f[key][()], dtype=np.float64)
                stamps = "timing/timestamp_confocal"
                time = np.asarray(f[stamps][()], dtype=np.float64) if stamps in f else None
            except OSError as exc:
                raise DataError(f"{path}: cannot read {key!r} (truncated or corrupt file?): {exc}") from None
            if activity.ndim != 2:
                raise DataError(f"{path}: {key} must be 2-D (T, N), got shape {activity.shape}")
            T = activity.shape[0]
            splits, bad_splits = _splits(f, path)
            n_time = None if time is None else time.size
            if bad_splits and n_time not in (None, T):
                raise DataError(bad_splits)  # a trimmed file needs them to say which frames it holds
            frames, trimmed = _frames(path, key, T, n_time, splits)
            if trimmed:
                time = time[frames]
            lengths = [b - a + 1 for a, b in splits] if splits else [T]
            boundaries = np.cumsum(lengths)[:-1] if sum(lengths) == T else np.zeros(0, np.int64)
            dt = options.get("dt")
            if time is not None and T > 1:
                steps = np.concatenate([np.diff(seg) for seg in np.split(time, boundaries)])
                dt = dt if dt is not None else float(np.median(steps if steps.size else np.diff(time)))
            if dt is None:
                raise DataError(f"{path}: no timing/timestamp_confocal; pass dt (frame interval in seconds)")
            covariates: dict[str, np.ndarray] = {}
            dropped: list[str] = []
            if options.get("behavior", True) and "behavior" in f:
                full = trimmed or None  # behaviour may be stored on the full (timestamp) frame axis
                for name, ds in f["behavior"].items():
                    if not hasattr(ds, "shape") or len(ds.shape) == 0 or ds.shape[0] not in (T, full):
                        continue  # event lists and other non-per-frame data
                    values = np.asarray(ds[()], dtype=np.float64)
                    if values.shape[0] != T:
                        values = values[frames]  # a trimmed file's behaviour on the full frame axis
                    if np.isnan(values).all():
                        dropped.append(name)
                        continue
                    covariates[name] = values.astype(np.float32)
        session = path.stem[: -len("-data")] if path.stem.endswith("-data") else path.stem
        ids = [f"roi{i}" for i in range(activity.shape[1])]
        finite(activity, path, key, neuron_ids=ids)
        provenance = {"source": self.name, "file": str(path), "trace": trace, "dropped_all_nan_behavior": dropped}
        if splits:
            provenance["idx_splits"] = [list(r) for r in splits]
        if bad_splits:
            provenance["idx_splits_ignored"] = bad_splits
        if trimmed:
            provenance["trimmed"] = (
                f"trace has {T} of the {trimmed} timestamped frames; loaded the frames idx_splits names "
                f"({', '.join(f'{a}..{b}' for a, b in splits)}, 1-based) with their timestamps"
            )
        return [
            make_recording(
                path,
                activity,
                dt,
                time=time,
                covariates=covariates,
                neuron_ids=ids,
                session=session,
                boundaries=boundaries,
                provenance=provenance,
            )
        ]


def _splits(f, path: Path) -> tuple[list[tuple[int, int]], str | None]:
    """(``gcamp/idx_splits`` as [(start, end)], 1-based inclusive, or []; what is wrong with them, or None)."""
    if "gcamp/idx_splits" not in f:
        return [], None
    arr = np.asarray(f["gcamp/idx_splits"][()])
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[:, None]
    if arr.ndim != 2 or 2 not in arr.shape or not np.issubdtype(arr.dtype, np.number):
        return [], f"{path}: gcamp/idx_splits must be a (2, k) array of start/end frames, got shape {arr.shape}"
    pairs = arr.T if arr.shape[0] == 2 else arr  # the lab's exporter writes (2, k): starts, then ends
    out = [(int(a), int(b)) for a, b in pairs]
    prev = 0
    for a, b in out:
        if not prev < a <= b:
            return [], f"{path}: gcamp/idx_splits ranges {out} must be increasing, non-overlapping and 1-based"
        prev = b
    return out, None


def _frames(path: Path, key: str, T: int, n_time: int | None, splits) -> tuple[np.ndarray, int]:
    """(0-based timestamp frames the trace holds, number of timestamps when trimmed else 0)."""
    if n_time is None or n_time == T:
        return np.arange(T), 0
    where = f"{path}: timing/timestamp_confocal has {n_time} entries but {key} has T={T} frames"
    if n_time < T or not splits:
        raise DataError(f"{where}{'' if splits else ' and there is no gcamp/idx_splits to say which frames it holds'}")
    frames = np.concatenate([np.arange(a - 1, b) for a, b in splits])
    if frames.size != T or splits[-1][1] > n_time:
        raise DataError(
            f"{where}; gcamp/idx_splits ({', '.join(f'{a}..{b}' for a, b in splits)}) cover {frames.size} frames "
            f"up to {splits[-1][1]}, so the trace cannot be matched to its timestamps"
        )
    return frames, n_time
