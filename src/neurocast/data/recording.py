"""The one data type every source produces and every consumer reads.

A :class:`Recording` holds one session: activity ``(T, N)`` float32 sampled every ``dt``
seconds, optionally other per-neuron channels of the same shape (a simulator writes
voltage, calcium and fluorescence), an optional stimulus ``(T, S)``, optional per-frame
covariates (behaviour), per-neuron metadata, an optional sparse connectome, a session id
and provenance.

Arrays are either in memory (NumPy) or lazy (a chunked on-disk store, see
:mod:`neurocast.data.store`); consumers read time ranges with :meth:`Recording.read` and
never need to know which. In-memory recordings are fully validated on construction; a
store validates every chunk as it is written, so opening one only checks shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from neurocast.data.connectome import Connectome
from neurocast.errors import DataError


def _is_lazy(arr: Any) -> bool:
    return not isinstance(arr, np.ndarray)


def _first_nonfinite(arr: np.ndarray) -> tuple[int, tuple[int, ...], float] | None:
    """(count, index of first non-finite entry, its value) or None when all finite."""
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    idx = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), arr.shape)
    return int(bad.sum()), tuple(int(i) for i in idx), float(arr[idx])


READ_BLOCK_BYTES = 64 * 2**20


def _read_range(arr: Any, t0: int, t1: int) -> np.ndarray:
    """Frames [t0, t1) as float32; lazy arrays are read block by block into one buffer,
    so a large range costs its own size in memory, not twice that."""
    if not _is_lazy(arr):
        return np.asarray(arr[t0:t1], dtype=np.float32)
    row_bytes = 4 * int(np.prod(arr.shape[1:]))
    step = max(1, READ_BLOCK_BYTES // max(row_bytes, 1))
    chunks = getattr(arr, "chunks", None)
    if chunks:
        step = max(chunks[0], step // chunks[0] * chunks[0])
    if t1 - t0 <= step:
        return np.asarray(arr[t0:t1], dtype=np.float32)
    out = np.empty((t1 - t0, *arr.shape[1:]), dtype=np.float32)
    a = t0
    while a < t1:
        # align block ends to the store's chunks so no chunk is decoded twice
        b = min(t1, (a // step + 1) * step)
        out[a - t0 : b - t0] = arr[a:b]
        a = b
    return out


def check_finite(arr: np.ndarray, what: str, *, frame_offset: int = 0, neuron_ids=None) -> None:
    """Raise a DataError saying where the first NaN/Inf of a (T, N) or (T, S) block is."""
    found = _first_nonfinite(arr)
    if found is None:
        return
    count, idx, value = found
    where = f"frame {idx[0] + frame_offset}"
    if len(idx) > 1:
        col = idx[1]
        label = f" (id {neuron_ids[col]!r})" if neuron_ids is not None else ""
        where += f", column {col}{label}"
    kind = "NaN" if np.isnan(value) else "Inf"
    raise DataError(f"{what} contains {count} non-finite value(s); first is {kind} at {where}")


def _as_float32(arr: Any, what: str) -> Any:
    if _is_lazy(arr):
        if not hasattr(arr, "shape") or not hasattr(arr, "__getitem__"):
            raise DataError(f"{what} must be an array, got {type(arr).__name__}")
        if np.dtype(arr.dtype) != np.float32:
            raise DataError(f"{what} must be float32 when stored on disk, got {arr.dtype}")
        return arr
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{what} must be numeric, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


class Recording:
    """One recorded (or simulated) session, validated on construction (one-line DataError naming the problem).

    ``activity`` (T, N): the primary channel, any float array (stored float32), or ``channels``
    {name: (T, N)} with ``primary`` naming the main one; ``dt``: frame interval in seconds;
    ``stimulus`` (T, S); ``time`` (T,) timestamps in seconds, strictly increasing;
    ``covariates`` {name: (T, K)} per-frame behaviour (NaN = missing); ``neuron_ids``,
    ``cell_types`` (N,) strings; ``positions`` (N, 3); ``connectome`` (presynaptic lists per
    neuron); ``session`` id; ``provenance`` (free-form, kept in stores); ``boundaries``: frames
    where the recording restarts (windows never cross them). Arrays may be lazy (a store's).
    """

    def __init__(
        self,
        activity: Any = None,
        dt: float | None = None,
        *,
        channels: Mapping[str, Any] | None = None,
        primary: str | None = None,
        stimulus: Any = None,
        time: Any = None,
        covariates: Mapping[str, Any] | None = None,
        neuron_ids: Any = None,
        cell_types: Any = None,
        positions: Any = None,
        connectome: Connectome | None = None,
        session: str = "session",
        provenance: Mapping[str, Any] | None = None,
        boundaries: Any = None,
    ):
        if channels is None:
            if activity is None:
                raise DataError("recording: activity is required (or give channels)")
            channels = {"activity": activity}
            primary = primary or "activity"
        elif activity is not None:
            raise DataError("recording: give either activity or channels, not both")
        if not channels:
            raise DataError("recording: channels must not be empty")
        primary = primary or next(iter(channels))
        if primary not in channels:
            raise DataError(f"recording: primary channel {primary!r} is not one of {sorted(channels)}")
        self.session = str(session)
        if not self.session:
            raise DataError("recording: session id must be a non-empty string")
        where = f"recording {self.session!r}"

        self.channels: dict[str, Any] = {}
        shape = None
        for name, arr in channels.items():
            arr = _as_float32(arr, f"{where}: channel {name!r}")
            if len(arr.shape) != 2:
                raise DataError(f"{where}: channel {name!r} must be 2-D (T, N), got shape {tuple(arr.shape)}")
            if arr.shape[0] == 0 or arr.shape[1] == 0:
                raise DataError(f"{where}: channel {name!r} is empty, shape {tuple(arr.shape)}")
            if shape is not None and tuple(arr.shape) != shape:
                raise DataError(
                    f"{where}: channel {name!r} has shape {tuple(arr.shape)}, other channels have {shape}"
                )
            shape = tuple(arr.shape)
            self.channels[name] = arr
        self.primary = primary
        T, N = shape

        if dt is None:
            raise DataError(f"{where}: dt (frame interval in seconds) is required")
        try:
            dt = float(dt)
        except (TypeError, ValueError):
            raise DataError(f"{where}: dt must be a number of seconds, got {dt!r}") from None
        if not np.isfinite(dt) or dt <= 0:
            raise DataError(f"{where}: dt must be a positive number of seconds, got {dt}")
        self.dt = dt

        # Per-neuron metadata.
        if neuron_ids is None:
            neuron_ids = np.array([str(i) for i in range(N)], dtype=object)
        neuron_ids = np.asarray(neuron_ids, dtype=object).astype(str).astype(object)
        if neuron_ids.shape != (N,):
            raise DataError(f"{where}: neuron_ids has {neuron_ids.size} entries but the recording has N={N} neurons")
        if len(set(neuron_ids.tolist())) != N:
            values, counts = np.unique(neuron_ids.astype(str), return_counts=True)
            raise DataError(f"{where}: neuron_ids must be unique; {str(values[counts > 1][0])!r} appears more than "
                            "once")
        self.neuron_ids = neuron_ids
        if cell_types is not None:
            cell_types = np.asarray(cell_types, dtype=object).astype(str).astype(object)
            if cell_types.shape != (N,):
                raise DataError(f"{where}: cell_types has {cell_types.size} entries but the recording has N={N} "
                                "neurons")
        self.cell_types = cell_types
        if positions is not None:
            positions = np.asarray(positions, dtype=np.float32)
            if positions.ndim == 1:
                positions = positions[:, None]
            if positions.ndim != 2 or positions.shape[0] != N or not 1 <= positions.shape[1] <= 3:
                raise DataError(
                    f"{where}: positions must have shape (N={N}, 1..3), got {tuple(positions.shape)}"
                )
            check_finite(positions, f"{where}: positions")
        self.positions = positions
        if connectome is not None:
            if not isinstance(connectome, Connectome):
                raise DataError(f"{where}: connectome must be a neurocast Connectome, got {type(connectome).__name__}")
            if connectome.n_neurons != N:
                raise DataError(
                    f"{where}: connectome is for {connectome.n_neurons} neurons but the recording has N={N}"
                )
        self.connectome = connectome

        # Per-frame arrays.
        if stimulus is not None:
            stimulus = _as_float32(stimulus, f"{where}: stimulus")
            if len(stimulus.shape) != 2 or stimulus.shape[0] != T or stimulus.shape[1] == 0:
                raise DataError(f"{where}: stimulus must have shape (T={T}, S>=1), got {tuple(stimulus.shape)}")
        self.stimulus = stimulus
        if time is not None:
            time = np.asarray(time, dtype=np.float64)
            if time.shape != (T,):
                raise DataError(f"{where}: time must have shape (T={T},), got {tuple(time.shape)}")
            check_finite(time, f"{where}: time")
            steps = np.diff(time)
            if np.any(steps <= 0):
                k = int(np.flatnonzero(steps <= 0)[0])
                raise DataError(
                    f"{where}: time must increase strictly; frame {k + 1} ({time[k + 1]}) is not after frame {k} "
                    f"({time[k]})"
                )
        self.time = time
        self.covariates: dict[str, np.ndarray] = {}
        for name, arr in (covariates or {}).items():
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim == 1:
                arr = arr[:, None]
            if arr.ndim != 2 or arr.shape[0] != T:
                raise DataError(f"{where}: covariate {name!r} must have T={T} rows, got shape {tuple(arr.shape)}")
            if np.isinf(arr).any():
                raise DataError(f"{where}: covariate {name!r} contains Inf (NaN marks missing values, Inf is not "
                                "allowed)")
            self.covariates[name] = arr
        self.provenance: dict[str, Any] = dict(provenance or {})
        if boundaries is None:
            boundaries = np.zeros(0, dtype=np.int64)
        boundaries = np.asarray(boundaries)
        if boundaries.size and not np.issubdtype(boundaries.dtype, np.integer):
            raise DataError(f"{where}: boundaries must be integer frame indices")
        boundaries = boundaries.astype(np.int64).ravel()
        if boundaries.size and (np.any(np.diff(boundaries) <= 0) or boundaries[0] <= 0 or boundaries[-1] >= T):
            raise DataError(f"{where}: boundaries must increase strictly inside (0, T={T}), got {boundaries.tolist()}")
        self.boundaries = boundaries

        # Values: in-memory arrays are checked now; lazy ones were checked when written.
        for name, arr in self.channels.items():
            if not _is_lazy(arr):
                check_finite(arr, f"{where}: channel {name!r}", neuron_ids=self.neuron_ids)
        if self.stimulus is not None and not _is_lazy(self.stimulus):
            check_finite(self.stimulus, f"{where}: stimulus")

    # ------------------------------------------------------------------ shape
    @property
    def activity(self) -> Any:
        """The primary channel, (T, N) float32 (a NumPy array or a lazy on-disk array)."""
        return self.channels[self.primary]

    @property
    def T(self) -> int:
        return int(self.activity.shape[0])

    @property
    def N(self) -> int:
        return int(self.activity.shape[1])

    @property
    def stimulus_dims(self) -> int | None:
        return None if self.stimulus is None else int(self.stimulus.shape[1])

    @property
    def in_memory(self) -> bool:
        arrays = list(self.channels.values()) + ([self.stimulus] if self.stimulus is not None else [])
        return not any(_is_lazy(a) for a in arrays)

    @property
    def cell_type_names(self) -> list[str] | None:
        """Sorted unique cell-type names (None without cell types)."""
        return None if self.cell_types is None else sorted(set(self.cell_types.tolist()))

    @property
    def duration(self) -> float:
        return self.T * self.dt

    def segments(self) -> list[tuple[int, int]]:
        """Continuous pieces [start, end) between boundaries (where the recording restarts)."""
        edges = [0, *self.boundaries.tolist(), self.T]
        return list(zip(edges[:-1], edges[1:]))

    # ------------------------------------------------------------------ reading
    def read(self, t0: int = 0, t1: int | None = None, channel: str | None = None) -> np.ndarray:
        """Frames [t0, t1) of a channel (default: primary) as an in-memory float32 array."""
        arr = self.channels[self._channel(channel)]
        t0, t1 = self._range(t0, t1)
        return _read_range(arr, t0, t1)

    def read_stimulus(self, t0: int = 0, t1: int | None = None) -> np.ndarray | None:
        """Stimulus frames [t0, t1) as an in-memory float32 array (t1 - t0, S), or None without a stimulus."""
        if self.stimulus is None:
            return None
        t0, t1 = self._range(t0, t1)
        return _read_range(self.stimulus, t0, t1)

    def _channel(self, channel: str | None) -> str:
        channel = channel or self.primary
        if channel not in self.channels:
            raise DataError(
                f"recording {self.session!r} has no channel {channel!r}; channels are {sorted(self.channels)}"
            )
        return channel

    def _range(self, t0: int, t1: int | None) -> tuple[int, int]:
        t1 = self.T if t1 is None else t1
        if not (0 <= t0 <= t1 <= self.T):
            raise DataError(f"recording {self.session!r}: time range [{t0}, {t1}) is outside [0, {self.T})")
        return int(t0), int(t1)

    # ------------------------------------------------------------------ derived recordings
    def with_primary(self, channel: str) -> "Recording":
        """The same recording with another channel as its activity (no data is copied)."""
        channel = self._channel(channel)
        return self._replace(primary=channel, validate=False)

    def slice_time(self, t0: int, t1: int) -> "Recording":
        """Frames [t0, t1) as an in-memory recording (metadata and connectome shared)."""
        t0, t1 = self._range(t0, t1)
        if t1 == t0:
            raise DataError(f"recording {self.session!r}: empty time range [{t0}, {t1})")
        return self._replace(
            channels={k: np.asarray(v[t0:t1], dtype=np.float32) for k, v in self.channels.items()},
            stimulus=None if self.stimulus is None else np.asarray(self.stimulus[t0:t1], dtype=np.float32),
            time=None if self.time is None else self.time[t0:t1],
            covariates={k: v[t0:t1] for k, v in self.covariates.items()},
            provenance={**self.provenance, "time_slice": [t0, t1]},
            boundaries=self.boundaries[(self.boundaries > t0) & (self.boundaries < t1)] - t0,
        )

    def load(self) -> "Recording":
        """An in-memory copy (reads every frame; only for recordings that fit in memory)."""
        return self if self.in_memory else self.slice_time(0, self.T)

    def _replace(self, validate: bool = True, **changes: Any) -> "Recording":
        kwargs = dict(
            channels=self.channels,
            primary=self.primary,
            dt=self.dt,
            stimulus=self.stimulus,
            time=self.time,
            covariates=self.covariates,
            neuron_ids=self.neuron_ids,
            cell_types=self.cell_types,
            positions=self.positions,
            connectome=self.connectome,
            session=self.session,
            provenance=self.provenance,
            boundaries=self.boundaries,
        )
        kwargs.update(changes)
        if validate:
            return Recording(**kwargs)
        new = object.__new__(Recording)
        new.__dict__.update({k: v for k, v in kwargs.items()})
        return new

    # ------------------------------------------------------------------ description
    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable description (what `neurocast data info --json` prints)."""
        return {
            "session": self.session,
            "T": self.T,
            "N": self.N,
            "dt": self.dt,
            "duration_s": round(self.duration, 6),
            "channels": list(self.channels),
            "primary": self.primary,
            "stimulus_dims": self.stimulus_dims,
            "n_cell_types": None if self.cell_types is None else len(self.cell_type_names),
            "n_edges": None if self.connectome is None else self.connectome.n_edges,
            "has_positions": self.positions is not None,
            "covariates": {k: int(v.shape[1]) for k, v in self.covariates.items()},
            "segments": len(self.boundaries) + 1,
            "in_memory": self.in_memory,
            "provenance": self.provenance,
        }

    def __repr__(self) -> str:
        extra = f", S={self.stimulus_dims}" if self.stimulus is not None else ""
        return f"Recording(session={self.session!r}, T={self.T}, N={self.N}, dt={self.dt:g}{extra})"
