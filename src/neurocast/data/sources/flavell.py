"""Flavell-lab whole-brain C. elegans GCaMP recordings (processed HDF5, one file per animal).

Layout read (as published in flavell-lab/NSM_5HTR_analysis, ``data/``):
``gcamp/trace_array`` (T, N) z-scored activity, ``timing/timestamp_confocal`` (T,) seconds,
``behavior/*`` per-frame behaviour (kept as covariates). Options:

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
                time = np.asarray(f["timing/timestamp_confocal"][()], dtype=np.float64) if "timing/timestamp_confocal" in f else None
            except OSError as exc:
                raise DataError(f"{path}: cannot read {key!r} (truncated or corrupt file?): {exc}") from None
            if activity.ndim != 2:
                raise DataError(f"{path}: {key} must be 2-D (T, N), got shape {activity.shape}")
            T = activity.shape[0]
            if time is not None and time.shape != (T,):
                raise DataError(f"{path}: timing/timestamp_confocal has {time.size} entries but {key} has T={T} frames")
            dt = options.get("dt")
            if time is not None and T > 1:
                dt_file = float(np.median(np.diff(time)))
                dt = dt if dt is not None else dt_file
            if dt is None:
                raise DataError(f"{path}: no timing/timestamp_confocal; pass dt (frame interval in seconds)")
            covariates: dict[str, np.ndarray] = {}
            dropped: list[str] = []
            if options.get("behavior", True) and "behavior" in f:
                for name, ds in f["behavior"].items():
                    if not hasattr(ds, "shape") or len(ds.shape) == 0 or ds.shape[0] != T:
                        continue  # event lists and other non-per-frame data
                    values = np.asarray(ds[()], dtype=np.float64)
                    if np.isnan(values).all():
                        dropped.append(name)
                        continue
                    covariates[name] = values.astype(np.float32)
        session = path.stem[: -len("-data")] if path.stem.endswith("-data") else path.stem
        return [
            Recording(
                activity,
                dt,
                time=time,
                covariates=covariates,
                neuron_ids=[f"roi{i}" for i in range(activity.shape[1])],
                session=session,
                provenance={
                    "source": self.name,
                    "file": str(path),
                    "trace": trace,
                    "dropped_all_nan_behavior": dropped,
                },
            )
        ]
