"""WormWideWeb JSON exports: one C. elegans whole-brain recording per file (Flavell lab).

These are the files of the 40 NeuroPAL sessions of Atanas & Kim et al. (Cell 2023) that POCO
was evaluated on, as downloaded from wormwideweb.org (``<uid>.json``, e.g. ``2022-07-20-01.json``).
Keys read (the others - CePNEM fits, encoding tables - are ignored):

* ``trace_array`` - neurons x time, z-scored (required); ``trace_original`` with the
  ``trace`` option (either orientation: it is matched to the neuron count);
* ``timestamp_confocal`` - seconds per frame; otherwise ``avg_timestep`` - minutes per frame;
* ``ranges`` - frame ranges (1-based, inclusive) of the recordings joined in the file:
  every range after the first starts a new segment (windows never cross it);
* ``labeled`` - ``{"<1-based neuron>": {"label": "AVAL", "neuron_class": "AVA", ...}}`` for
  NeuroPAL-identified neurons: a label without ``?`` that is unique in the file becomes the
  neuron's id (so sessions can be matched by identity), every other neuron is ``roi<k>``
  (k = its 1-based index in the file; option ``ids: index`` uses that for all); the class
  becomes the cell type (``unlabeled`` otherwise);
* behaviour ``velocity``, ``head_curvature``, ``pumping``, ``angular_velocity``,
  ``body_curvature`` (per frame; ``null`` = missing) and ``reversal_events``
  (``[start, end]`` pairs, frames ``start..end-1`` counted from 0, as in the lab's HDF5
  ``behavior/reversal_vec``) as covariates (option ``behavior: false`` drops them).
"""

from __future__ import annotations

import json
import mmap
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.data.sources import register_source
from neurocast.data.sources.checks import finite, make_recording, numeric_array, time_axis
from neurocast.errors import DataError

BEHAVIOUR = ("velocity", "head_curvature", "pumping", "angular_velocity", "body_curvature")
UID = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{2}$")


def _mentions_trace_array(path: Path) -> bool:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return mm.find(b'"trace_array"') != -1
    except (OSError, ValueError):  # empty or unreadable: not claimed (unless named like an export)
        return False


@register_source
class WormWideWebJSON:
    name = "wormwideweb"
    description = "WormWideWeb C. elegans JSON export (trace_array neurons x time, avg_timestep, labeled)"
    patterns = "<uid>.json with a trace_array key (e.g. 2022-07-20-01.json)"

    def matches(self, path: Path) -> bool:
        if not (path.is_file() and path.suffix.lower() == ".json"):
            return False
        return bool(UID.match(path.stem)) or _mentions_trace_array(path)

    def load(self, path: Path, options: Mapping[str, Any]) -> list:
        data = _read_json(path)
        trace = options.get("trace") or "trace_array"
        if trace not in ("trace_array", "trace_original"):
            raise DataError(f"wormwideweb: option trace={trace!r} is not trace_array or trace_original")
        if "trace_array" not in data:
            keys = ", ".join(sorted(data)[:8]) or "none"
            raise DataError(f"{path}: no 'trace_array' (is this a WormWideWeb export? keys: {keys})")
        n_neurons = _count(data, path)
        if trace not in data:
            raise DataError(f"{path}: no {trace!r} in this file")
        x = numeric_array(data[trace], path, trace, 2)
        transposed = False
        if trace == "trace_array" or x.shape[0] == n_neurons:
            if x.shape[0] != n_neurons:
                raise DataError(f"{path}: {trace} has {x.shape[0]} rows but num_neurons is {n_neurons}")
            x = x.T  # neurons x time in the file
            transposed = True
        elif x.shape[1] != n_neurons:
            raise DataError(f"{path}: {trace} has shape {x.shape}, neither dimension is num_neurons={n_neurons}")
        T, N = x.shape
        time, dt = _timing(data, path, T, options.get("dt"))
        ids, classes, n_named = _identities(data, path, N, options.get("ids") or "label")
        finite(x, path, trace, neuron_ids=ids)
        covariates = _behaviour(data, path, T) if options.get("behavior", True) else {}
        boundaries, ranges_note = _boundaries(data, path, T)
        session = str(data.get("uid") or path.stem)
        return [
            make_recording(
                path,
                x,
                dt,
                time=time,
                covariates=covariates,
                neuron_ids=ids,
                cell_types=classes,
                session=session,
                boundaries=boundaries,
                provenance={
                    "source": self.name,
                    "file": str(path),
                    "trace": trace,
                    "orientation": "neurons x time" if transposed else "time x neurons",
                    "dataset_type": data.get("dataset_type"),
                    "labelled_neurons": n_named,
                    "ids": "NeuroPAL label where certain and unique, else roi<k> (1-based index in the file)"
                    if (options.get("ids") or "label") == "label" else "roi<k> (1-based index in the file)",
                    "time": "timestamp_confocal" if "timestamp_confocal" in data else "avg_timestep (minutes)",
                    **({"ranges": ranges_note} if ranges_note else {}),
                },
            )
        ]


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'trace_array', got a {type(data).__name__}")
    return data


def _count(data: dict, path: Path) -> int:
    """Number of neurons: num_neurons when given (must agree with trace_array), else its rows."""
    rows = data["trace_array"]
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: trace_array must be a non-empty list of per-neuron lists")
    n = data.get("num_neurons")
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise DataError(f"{path}: num_neurons must be a positive integer, got {n!r}")
        if len(rows) != n:
            raise DataError(f"{path}: trace_array has {len(rows)} rows (neurons) but num_neurons is {n}")
    return len(rows)


def _timing(data: dict, path: Path, T: int, dt_option) -> tuple[np.ndarray | None, float]:
    time = None
    if data.get("timestamp_confocal") is not None:
        time = numeric_array(data["timestamp_confocal"], path, "timestamp_confocal", 1)
        if time.size != T:
            raise DataError(f"{path}: timestamp_confocal has {time.size} entries but the trace has T={T} frames")
        time_axis(time, path, "timestamp_confocal")
    if dt_option is not None:
        return time, float(dt_option)
    if time is not None and T > 1:
        return time, float(np.median(np.diff(time)))
    step = data.get("avg_timestep")
    if step is None:
        raise DataError(f"{path}: neither timestamp_confocal nor avg_timestep; give dt (seconds)")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not np.isfinite(step) or step <= 0:
        raise DataError(f"{path}: avg_timestep must be a positive number of minutes, got {step!r}")
    return time, float(step) * 60.0


def _identities(data: dict, path: Path, N: int, mode: str) -> tuple[list[str], list[str], int]:
    if mode not in ("label", "index"):
        raise DataError(f"wormwideweb: option ids={mode!r} is not label or index")
    labeled = data.get("labeled") or {}
    if not isinstance(labeled, dict):
        raise DataError(f"{path}: labeled must be an object mapping 1-based neuron numbers to labels")
    names: dict[int, str] = {}
    classes = ["unlabeled"] * N
    for key, entry in labeled.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise DataError(f"{path}: labeled key {key!r} is not a neuron number") from None
        if not 1 <= k <= N:
            raise DataError(f"{path}: labeled key {key!r} is outside the neurons 1..{N}")
        if not isinstance(entry, dict):
            raise DataError(f"{path}: labeled[{key!r}] must be an object with a 'label'")
        label = entry.get("label")
        cls = entry.get("neuron_class")
        if isinstance(cls, str) and cls and "?" not in cls:
            classes[k - 1] = cls
        if isinstance(label, str) and label and "?" not in label and not label.startswith("roi"):
            names[k - 1] = label
    counts: dict[str, int] = {}
    for label in names.values():
        counts[label] = counts.get(label, 0) + 1
    ids = [f"roi{i + 1}" for i in range(N)]
    if mode == "label":
        for i, label in names.items():
            if counts[label] == 1:
                ids[i] = label
    return ids, classes, len(names)


def _behaviour(data: dict, path: Path, T: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in BEHAVIOUR:
        if data.get(key) is None:
            continue
        values = numeric_array(data[key], path, key, (1, 2))
        if values.shape[0] != T:
            raise DataError(f"{path}: {key} has {values.shape[0]} frames but the trace has T={T}")
        if np.isinf(values).any():
            raise DataError(f"{path}: {key} contains Inf")
        if not np.isnan(values).all():
            out[key] = values.astype(np.float32)
    events = data.get("reversal_events")
    if events is not None:
        out["reversal"] = _reversals(events, path, T)
    return out


def _reversals(events: Any, path: Path, T: int) -> np.ndarray:
    """Per-frame 0/1 from [start, end] pairs (frames start..end-1 from 0), or [[starts], [ends]]."""
    vec = np.zeros(T, dtype=np.float32)
    if not isinstance(events, list):
        raise DataError(f"{path}: reversal_events must be a list of [start, end] pairs")
    if not events:
        return vec
    arr = numeric_array(events, path, "reversal_events", 2)
    if arr.shape[1] != 2 and arr.shape[0] == 2:
        arr = arr.T  # [[starts...], [ends...]]
    if arr.shape[1] != 2:
        raise DataError(f"{path}: reversal_events must be [start, end] pairs, got shape {arr.shape}")
    if not np.isfinite(arr).all() or np.any(arr != np.round(arr)):
        raise DataError(f"{path}: reversal_events must hold whole frame numbers")
    for k, (a, b) in enumerate(arr.astype(np.int64)):
        if not 0 <= a < b <= T:
            raise DataError(f"{path}: reversal_events[{k}] = [{a}, {b}] is not a frame range inside 0..{T}")
        vec[a:b] = 1.0
    return vec


def _boundaries(data: dict, path: Path, T: int) -> tuple[np.ndarray, str | None]:
    """(starts, 0-based, of every recording after the first, from ``ranges``; a note when unused).

    ``ranges`` (1-based, inclusive) lists the recordings joined in the file; ranges that do
    not follow each other inside the trace are not recording boundaries and are ignored.
    """
    none = np.zeros(0, dtype=np.int64)
    ranges = data.get("ranges")
    if not ranges:
        return none, None
    if not isinstance(ranges, list) or not all(isinstance(r, list) and r for r in ranges):
        raise DataError(f"{path}: ranges must be a list of frame ranges")
    try:
        spans = [(int(r[0]), int(r[-1])) for r in ranges]
    except (TypeError, ValueError):
        raise DataError(f"{path}: ranges must hold frame numbers") from None
    prev_end = 0
    for a, b in spans:
        if not (prev_end < a <= b <= T):
            return none, f"ranges {[list(x) for x in spans]} do not follow each other inside 1..{T}: not used"
        prev_end = b
    return np.asarray([a - 1 for a, _ in spans[1:]], dtype=np.int64), None
