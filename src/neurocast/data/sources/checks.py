"""Checks shared by file sources, so every bad input names the file and the field it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from neurocast.data.recording import Recording, check_finite
from neurocast.errors import DataError


def numeric_array(value: Any, path: Path, field: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``value`` as a float64 array of the given dimensionality, or a DataError naming file and field.

    JSON ``null`` becomes NaN (callers decide whether NaN is allowed); ragged nesting,
    strings and wrong dimensionality are errors.
    """
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if isinstance(value, list) and value and isinstance(value[0], list):
        lengths = {len(row) if isinstance(row, list) else -1 for row in value}
        if len(lengths) > 1:
            first = len(value[0])
            k = next(i for i, row in enumerate(value) if not isinstance(row, list) or len(row) != first)
            got = len(value[k]) if isinstance(value[k], list) else type(value[k]).__name__
            raise DataError(f"{path}: {field} is ragged: row {k} has {got} values, row 0 has {first}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        try:
            arr = _with_nan(value)  # JSON null marks a missing value
        except (TypeError, ValueError):
            raise DataError(f"{path}: {field} must hold numbers only") from None
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise DataError(f"{path}: {field} must be {want}, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{path}: {field} is empty")
    return arr


def _with_nan(value: Any) -> np.ndarray:
    def fix(v):
        if v is None:
            return np.nan
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return np.asarray(fix(value), dtype=np.float64)


def finite(arr: np.ndarray, path: Path, field: str, neuron_ids=None) -> None:
    """NaN/Inf in activity is an error naming the file, the field and where."""
    check_finite(arr, f"{path}: {field}", neuron_ids=neuron_ids)


def time_axis(time: np.ndarray, path: Path, field: str) -> None:
    """Timestamps must be finite and strictly increasing."""
    check_finite(time, f"{path}: {field}")
    steps = np.diff(time)
    if np.any(steps <= 0):
        k = int(np.flatnonzero(steps <= 0)[0])
        raise DataError(f"{path}: {field} must increase strictly; entry {k + 1} ({time[k + 1]}) is not after entry {k} "
                        f"({time[k]})")


def make_recording(path: Path, *args: Any, **kwargs: Any) -> Recording:
    """A Recording whose validation errors also name the file."""
    try:
        return Recording(*args, **kwargs)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
