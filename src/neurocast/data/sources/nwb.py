"""Neurodata Without Borders (NWB) optical physiology: one session per ``.nwb`` file.

Needs pynwb (``pip install 'neurocast[nwb]'``), imported only when a file is read.

* **Activity**: a ``RoiResponseSeries`` of a processing module (``processing/ophys`` in
  practice) inside ``DfOverF`` or ``Fluorescence``: data ``(T, n_rois)`` (``conversion`` and
  ``offset`` applied when they are not 1 and 0), frame times from ``timestamps`` or
  ``starting_time`` + ``rate``. With several series, option ``series`` picks one by name
  (``plane0``, ``DfOverF/plane0`` or ``ophys/DfOverF/plane0``); without it the only series
  under ``DfOverF`` is taken if there is exactly one, otherwise the error lists them all.
* **Neurons**: ids from the plane segmentation's ``id`` column for the series' ROIs; positions
  from ``x``/``y``(/``z``) columns, or the weighted centre of ``pixel_mask``, ``voxel_mask`` or
  ``image_mask``; cell types from a ``cell_type`` column where present.
* **Behaviour** (option ``behavior``, default on): every numeric ``TimeSeries`` in
  ``processing/behavior`` (``BehavioralTimeSeries``, ``Position``, ... or bare) becomes a
  covariate, linearly interpolated onto the imaging frames (NaN outside its time range).
* **Stimulus** (option ``stimulus``: names separated by commas, or ``all``): ``TimeSeries``
  in the file's ``stimulus`` group, sampled at each imaging frame with the value last
  presented (zero-order hold); a stimulus that starts after the first frame is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.data.recording import Recording
from neurocast.data.sources import register_source
from neurocast.data.sources.checks import finite, make_recording, time_axis
from neurocast.errors import DataError


def _pynwb():
    try:
        import pynwb
    except ImportError:
        raise DataError(
            "reading NWB files needs pynwb: pip install 'neurocast[nwb]' (or pip install pynwb)"
        ) from None
    return pynwb


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@register_source
class NWBOphys:
    name = "nwb"
    description = "NWB optical physiology (RoiResponseSeries in DfOverF / Fluorescence; needs pynwb)"
    patterns = "*.nwb"

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".nwb"

    def load(self, path: Path, options: Mapping[str, Any]) -> list[Recording]:
        pynwb = _pynwb()
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file")
        try:
            io = pynwb.NWBHDF5IO(str(path), "r")
            nwb = io.read()
        except Exception as exc:  # h5py/hdmf raise many kinds for a broken file
            raise DataError(f"{path}: not a readable NWB file: {_short(exc)}") from None
        with io:
            key, series = _pick_series(nwb, path, options.get("series"))
            data = np.asarray(series.data[()], dtype=np.float64)
            if data.ndim == 1:
                data = data[:, None]
            if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
                raise DataError(f"{path}: {key}/data must be (time, ROIs) and non-empty, got shape {data.shape}")
            conversion, offset = float(series.conversion or 1.0), float(getattr(series, "offset", 0.0) or 0.0)
            if conversion != 1.0 or offset != 0.0:
                data = data * conversion + offset
            T, N = data.shape
            time, dt = _frame_times(series, key, path, T)
            ids, positions, cell_types = _rois(series, key, path, N)
            finite(data, path, f"{key}/data", neuron_ids=ids)
            covariates, skipped = _behaviour(nwb, path, time) if options.get("behavior", True) else ({}, [])
            stimulus, stim_names = _stimulus(nwb, path, time, options.get("stimulus"))
            provenance = {
                "source": self.name,
                "file": str(path),
                "series": key,
                "identifier": nwb.identifier,
                "session_id": nwb.session_id,
                "stimulus": stim_names,
            }
            if conversion != 1.0 or offset != 0.0:
                provenance["scaled"] = f"data x {conversion:g} + {offset:g} (the series' conversion and offset)"
            if skipped:
                provenance["skipped_behavior"] = skipped
        return [
            make_recording(
                path,
                data,
                dt,
                time=time,
                stimulus=stimulus,
                covariates=covariates,
                neuron_ids=ids,
                cell_types=cell_types,
                positions=positions,
                session=path.stem,
                provenance=provenance,
            )
        ]


def _roi_series(nwb) -> dict[str, Any]:
    """Every RoiResponseSeries in the processing modules, by "module/interface/series"."""
    from pynwb.ophys import RoiResponseSeries

    out: dict[str, Any] = {}
    for mname, module in nwb.processing.items():
        for iname, iface in module.data_interfaces.items():
            if isinstance(iface, RoiResponseSeries):
                out[f"{mname}/{iname}"] = iface
            for sname, s in (getattr(iface, "roi_response_series", None) or {}).items():
                out[f"{mname}/{iname}/{sname}"] = s
    return out


def _pick_series(nwb, path: Path, wanted: str | None) -> tuple[str, Any]:
    found = _roi_series(nwb)
    if not found:
        modules = ", ".join(nwb.processing) or "none"
        raise DataError(
            f"{path}: no RoiResponseSeries (DfOverF / Fluorescence) in any processing module (modules: {modules})"
        )
    listing = ", ".join(found)
    if wanted:
        hits = [k for k in found if k == wanted or k.endswith("/" + wanted.strip("/"))]
        if len(hits) != 1:
            what = "matches several series" if hits else "is not a series of this file"
            raise DataError(f"{path}: series {wanted!r} {what}; series: {listing}")
        return hits[0], found[hits[0]]
    if len(found) == 1:
        return next(iter(found.items()))
    dff = [k for k in found if k.split("/")[-2:-1] == ["DfOverF"]]
    if len(dff) == 1:
        return dff[0], found[dff[0]]
    raise DataError(f"{path}: several RoiResponseSeries; choose one with the series option (--series): {listing}")


def _frame_times(series, key: str, path: Path, T: int) -> tuple[np.ndarray, float]:
    if series.timestamps is not None:
        time = np.asarray(series.get_timestamps(), dtype=np.float64)
        if time.shape != (T,):
            raise DataError(f"{path}: {key}/timestamps has {time.size} entries but {key}/data has T={T} frames")
        time_axis(time, path, f"{key}/timestamps")
        dt = float(np.median(np.diff(time))) if T > 1 else None
        if dt is None:
            raise DataError(f"{path}: {key} has one frame and no rate: the frame interval is unknown")
        return time, dt
    rate = series.rate
    if rate is None or not np.isfinite(rate) or rate <= 0:
        raise DataError(f"{path}: {key} has neither timestamps nor a positive rate (got rate={rate!r})")
    start = float(series.starting_time or 0.0)
    return start + np.arange(T) / float(rate), 1.0 / float(rate)


def _rois(series, key: str, path: Path, N: int):
    """(ids, positions or None, cell types or None) of the series' columns."""
    region = series.rois
    if region is None:
        return [str(i) for i in range(N)], None, None
    rows = np.asarray(region.data[()], dtype=np.int64).ravel()
    if rows.size != N:
        raise DataError(f"{path}: {key}/rois names {rows.size} ROIs but {key}/data has {N} columns")
    table = region.table
    ids = [str(int(i)) for i in np.asarray(table.id[:])[rows]]
    cols = set(table.colnames)
    positions = None
    if {"x", "y"} <= cols:
        positions = np.stack([np.asarray(table[c][:], dtype=np.float64)[rows] for c in ("x", "y", "z") if c in cols], 1)
    else:
        for mask in ("pixel_mask", "voxel_mask", "image_mask"):
            if mask in cols:
                positions = np.stack([_centre(table[mask][int(r)], mask) for r in rows])
                break
    cell_types = None
    if "cell_type" in cols:
        cell_types = [str(v) for v in np.asarray(table["cell_type"][:], dtype=object)[rows]]
    return ids, positions, cell_types


def _centre(mask, kind: str) -> np.ndarray:
    """Weighted centre of one ROI's mask (pixel/voxel lists of (x, y[, z], weight), or an image)."""
    if kind == "image_mask":
        img = np.asarray(mask, dtype=np.float64)
        w = np.clip(img, 0, None)
        grid = np.indices(img.shape).reshape(img.ndim, -1).astype(np.float64)
        return (grid * w.ravel()).sum(1) / max(w.sum(), 1e-12)
    arr = np.asarray([tuple(p) for p in mask], dtype=np.float64)
    coords, w = arr[:, :-1], np.clip(arr[:, -1], 0, None)
    return (coords * w[:, None]).sum(0) / max(w.sum(), 1e-12)


def _series_values(ts) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(values (n, k), times (n,)) of a numeric TimeSeries, or (None, None) when not numeric."""
    values = np.asarray(ts.data[()])
    if not np.issubdtype(values.dtype, np.number) or values.ndim not in (1, 2) or values.shape[0] < 1:
        return None, None
    values = values.astype(np.float64).reshape(values.shape[0], -1)
    conversion, offset = float(ts.conversion or 1.0), float(getattr(ts, "offset", 0.0) or 0.0)
    values = values * conversion + offset
    times = np.asarray(ts.get_timestamps(), dtype=np.float64)
    if times.shape != (values.shape[0],):
        return None, None
    return values, times


def _behaviour(nwb, path: Path, time: np.ndarray) -> tuple[dict[str, np.ndarray], list[str]]:
    from pynwb.base import TimeSeries

    module = nwb.processing.get("behavior") or nwb.processing.get("behaviour")
    out: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    if module is None:
        return out, skipped
    for iname, iface in module.data_interfaces.items():
        members = {iname: iface} if isinstance(iface, TimeSeries) else {
            f"{iname}/{n}": s
            for attr in ("time_series", "spatial_series") for n, s in (getattr(iface, attr, None) or {}).items()
        }
        for name, ts in members.items():
            values, times = _series_values(ts)
            if values is None or np.any(np.diff(times) <= 0):
                skipped.append(name)
                continue
            cols = [np.interp(time, times, values[:, j], left=np.nan, right=np.nan) for j in range(values.shape[1])]
            out[name.split("/")[-1] if name.split("/")[-1] not in out else name] = np.stack(cols, 1).astype(np.float32)
    return out, skipped


def _stimulus(nwb, path: Path, time: np.ndarray, wanted: str | None) -> tuple[np.ndarray | None, list[str]]:
    if not wanted:
        return None, []
    available = dict(nwb.stimulus)
    names = list(available) if wanted == "all" else [w.strip() for w in str(wanted).split(",") if w.strip()]
    if not names:
        raise DataError(f"{path}: the file has no stimulus TimeSeries")
    cols = []
    for name in names:
        if name not in available:
            raise DataError(f"{path}: no stimulus {name!r} (stimuli: {', '.join(available) or 'none'})")
        values, times = _series_values(available[name])
        if values is None:
            raise DataError(f"{path}: stimulus/{name} is not a numeric time series with one timestamp per sample")
        time_axis(times, path, f"stimulus/{name}/timestamps")
        finite(values, path, f"stimulus/{name}/data")
        if times[0] > time[0]:
            raise DataError(
                f"{path}: stimulus/{name} starts at {times[0]:g} s, after the first imaging frame ({time[0]:g} s)"
            )
        idx = np.searchsorted(times, time, side="right") - 1
        cols.append(values[idx])
    return np.concatenate(cols, axis=1), names
