"""Chunked on-disk store for recordings (zarr v3).

Layout of ``<name>.zarr/`` (a zarr v3 group)::

    attrs: format="neurocast-recording", format_version, session, dt, primary, T, N,
           stimulus_dims, channels, covariates, provenance, complete
    channels/<name>        (T, N) float32, chunked along time
    stimulus               (T, S) float32, same time chunks (optional)
    time                   (T,)   float64 timestamps (optional)
    covariates/<name>      (T, k) float32 (optional)
    neurons/ids            (N,)   str
    neurons/cell_types     (N,)   str (optional)
    neurons/positions      (N, D) float32 (optional)
    connectome/indptr      (N+1,) int64   CSR by postsynaptic neuron (optional)
    connectome/indices     (E,)   int64
    connectome/weights     (E,)   float32

Writing is incremental (:class:`RecordingWriter` appends blocks of frames, buffering at
most one time chunk per array) and atomic: data goes to ``<name>.zarr.partial-<pid>``
and is renamed into place only when :meth:`RecordingWriter.close` finishes, so a killed
writer never leaves a store that looks complete. Reading opens arrays lazily; any time
range can be read without touching the rest.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.data.connectome import Connectome
from neurocast.data.recording import Recording, check_finite
from neurocast.errors import DataError

FORMAT = "neurocast-recording"
FORMAT_VERSION = 1
TARGET_CHUNK_BYTES = 8 * 2**20


def default_chunk_steps(n_columns: int) -> int:
    """Time steps per chunk so that one chunk of an (T, n_columns) float32 array is ~8 MiB."""
    steps = TARGET_CHUNK_BYTES // (4 * max(1, n_columns))
    return int(min(8192, max(64, steps // 64 * 64)))


def _compressor():
    from zarr.codecs import BloscCodec

    # lz4 with byte shuffle: fast enough to stream a simulation to disk, ~2x on smooth traces.
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def is_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a neurocast recording store (complete or not)."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get("format") == FORMAT


class _Buffered:
    """Appends rows to a zarr array in whole time chunks (partial chunk kept in memory)."""

    def __init__(self, array, chunk_steps: int):
        self.array = array
        self.chunk_steps = chunk_steps
        self.pending: list[np.ndarray] = []
        self.n_pending = 0

    def append(self, block: np.ndarray) -> None:
        self.pending.append(block)
        self.n_pending += block.shape[0]
        if self.n_pending >= self.chunk_steps:
            data = np.concatenate(self.pending, axis=0)
            n_full = data.shape[0] // self.chunk_steps * self.chunk_steps
            self.array.append(data[:n_full], axis=0)
            rest = data[n_full:]
            self.pending = [rest] if rest.shape[0] else []
            self.n_pending = rest.shape[0]

    def flush(self) -> None:
        if self.n_pending:
            self.array.append(np.concatenate(self.pending, axis=0), axis=0)
        self.pending, self.n_pending = [], 0


class RecordingWriter:
    """Write a recording to a store block by block, without holding it in memory.

    >>> with RecordingWriter(path, n_neurons=N, dt=0.02, channels=["voltage"]) as w:
    ...     for block in blocks:
    ...         w.append({"voltage": block}, stimulus=stim_block)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_neurons: int,
        dt: float,
        channels: list[str] | tuple[str, ...] = ("activity",),
        primary: str | None = None,
        stimulus_dims: int | None = None,
        with_time: bool = False,
        covariate_dims: dict[str, int] | None = None,
        neuron_ids=None,
        cell_types=None,
        positions=None,
        connectome: Connectome | None = None,
        session: str = "session",
        provenance: dict[str, Any] | None = None,
        chunk_steps: int | None = None,
        overwrite: bool = False,
        length: int | None = None,
        boundaries=None,
    ):
        """``length`` preallocates the time axis: then blocks are written anywhere with
        :meth:`write` (parallel sequences) instead of appended."""
        import zarr

        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise DataError(f"store {self.path} already exists (refusing to overwrite it)")
        if not channels:
            raise DataError("store: at least one channel is required")
        primary = primary or channels[0]
        if primary not in channels:
            raise DataError(f"store: primary channel {primary!r} is not one of {list(channels)}")
        # Validate metadata up front with a one-frame in-memory recording (cheap, same rules).
        Recording(
            channels={c: np.zeros((1, n_neurons), np.float32) for c in channels},
            primary=primary,
            dt=dt,
            stimulus=None if not stimulus_dims else np.zeros((1, stimulus_dims), np.float32),
            neuron_ids=neuron_ids,
            cell_types=cell_types,
            positions=positions,
            connectome=connectome,
            session=session,
        )
        self.n_neurons = int(n_neurons)
        self.channels = list(channels)
        self.stimulus_dims = stimulus_dims or None
        self.with_time = with_time
        self.covariate_dims = dict(covariate_dims or {})
        self.session = session
        self.chunk_steps = int(chunk_steps or default_chunk_steps(n_neurons))
        if length is not None and length < 1:
            raise DataError(f"store {self.path}: length must be >= 1, got {length}")
        self.length = length
        self._written = 0
        self.boundaries = [] if boundaries is None else [int(b) for b in boundaries]
        self.tmp = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.root = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
        self.T = 0
        self._last_time: float | None = None
        self._closed = False

        rows = length or 0

        def series(name: str, cols: int, dtype: str = "float32"):
            return self.root.create_array(
                name, shape=(rows, cols), chunks=(self.chunk_steps, cols), dtype=dtype, compressors=_compressor()
            )

        self._arrays: dict[str, _Buffered] = {}
        for c in self.channels:
            self._arrays[f"channels/{c}"] = _Buffered(series(f"channels/{c}", self.n_neurons), self.chunk_steps)
        if self.stimulus_dims:
            self._arrays["stimulus"] = _Buffered(series("stimulus", self.stimulus_dims), self.chunk_steps)
        for name, k in self.covariate_dims.items():
            self._arrays[f"covariates/{name}"] = _Buffered(series(f"covariates/{name}", k), self.chunk_steps)
        if with_time:
            arr = self.root.create_array("time", shape=(rows,), chunks=(65536,), dtype="float64")
            self._arrays["time"] = _Buffered(arr, 65536)

        ids = np.asarray(neuron_ids if neuron_ids is not None else [str(i) for i in range(n_neurons)]).astype(str)
        self.root.create_array("neurons/ids", shape=ids.shape, dtype=str)[:] = ids
        if cell_types is not None:
            ct = np.asarray(cell_types).astype(str)
            self.root.create_array("neurons/cell_types", shape=ct.shape, dtype=str)[:] = ct
        if positions is not None:
            self.root.create_array("neurons/positions", data=np.asarray(positions, np.float32))
        if connectome is not None:
            self.root.create_array("connectome/indptr", data=connectome.indptr, compressors=_compressor())
            self.root.create_array("connectome/indices", data=connectome.indices, compressors=_compressor())
            self.root.create_array("connectome/weights", data=connectome.weights, compressors=_compressor())
        self.root.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "session": session,
                "dt": float(dt),
                "primary": primary,
                "channels": self.channels,
                "N": self.n_neurons,
                "T": 0,
                "stimulus_dims": self.stimulus_dims,
                "covariates": self.covariate_dims,
                "chunk_steps": self.chunk_steps,
                "provenance": provenance or {},
                "boundaries": self.boundaries,
                "complete": False,
            }
        )

    def append(
        self,
        channels: dict[str, np.ndarray],
        stimulus: np.ndarray | None = None,
        time: np.ndarray | None = None,
        covariates: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Append frames; every channel block must have the same number of rows."""
        if self.length is not None:
            raise DataError(f"store {self.path}: a preallocated store is filled with write(), not append()")
        blocks, n = self._blocks(channels, stimulus, time, covariates, self.T)
        for key, block in blocks.items():
            self._arrays[key].append(block)
        self.T += n

    def write(
        self,
        t0: int,
        channels: dict[str, np.ndarray],
        stimulus: np.ndarray | None = None,
        time: np.ndarray | None = None,
        covariates: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write frames [t0, t0 + n) of a preallocated store (``length`` given)."""
        if self.length is None:
            raise DataError(f"store {self.path}: write() needs a preallocated store (give length)")
        if self.with_time:
            raise DataError(f"store {self.path}: timestamps can only be appended")
        blocks, n = self._blocks(channels, stimulus, time, covariates, t0)
        if t0 < 0 or t0 + n > self.length:
            raise DataError(f"store {self.path}: frames [{t0}, {t0 + n}) outside [0, {self.length})")
        for key, block in blocks.items():
            self._arrays[key].array[t0 : t0 + n] = block
        self._written += n

    def _blocks(self, channels, stimulus, time, covariates, frame_offset: int):
        if self._closed:
            raise DataError(f"store {self.path}: writer is closed")
        if set(channels) != set(self.channels):
            raise DataError(f"store {self.path}: append needs channels {self.channels}, got {sorted(channels)}")
        n = None
        blocks: dict[str, np.ndarray] = {}
        for c in self.channels:
            block = np.asarray(channels[c], dtype=np.float32)
            if block.ndim != 2 or block.shape[1] != self.n_neurons:
                raise DataError(
                    f"store {self.path}: channel {c!r} block must be (t, {self.n_neurons}), got {block.shape}"
                )
            if n is not None and block.shape[0] != n:
                raise DataError(f"store {self.path}: channel blocks have different lengths ({n} vs {block.shape[0]})")
            n = block.shape[0]
            check_finite(block, f"store {self.path}: channel {c!r}", frame_offset=frame_offset)
            blocks[f"channels/{c}"] = block
        if self.stimulus_dims:
            if stimulus is None:
                raise DataError(f"store {self.path}: this store has a stimulus; append needs one")
            stimulus = np.asarray(stimulus, dtype=np.float32)
            if stimulus.shape != (n, self.stimulus_dims):
                raise DataError(
                    f"store {self.path}: stimulus block must be ({n}, {self.stimulus_dims}), got {stimulus.shape}"
                )
            check_finite(stimulus, f"store {self.path}: stimulus", frame_offset=frame_offset)
            blocks["stimulus"] = stimulus
        elif stimulus is not None:
            raise DataError(f"store {self.path}: store was created without a stimulus (stimulus_dims)")
        for name, k in self.covariate_dims.items():
            block = np.asarray((covariates or {}).get(name), dtype=np.float32)
            if block.ndim == 1:
                block = block[:, None]
            if block.shape != (n, k):
                raise DataError(f"store {self.path}: covariate {name!r} block must be ({n}, {k}), got {block.shape}")
            blocks[f"covariates/{name}"] = block
        if self.with_time:
            if time is None:
                raise DataError(f"store {self.path}: this store has timestamps; append needs time")
            time = np.asarray(time, dtype=np.float64)
            if time.shape != (n,):
                raise DataError(f"store {self.path}: time block must be ({n},), got {time.shape}")
            steps = np.diff(np.concatenate([[self._last_time], time]) if self._last_time is not None else time)
            if np.any(steps <= 0) or not np.all(np.isfinite(time)):
                raise DataError(f"store {self.path}: time must be finite and increase strictly (around frame {self.T})")
            self._last_time = float(time[-1])
            blocks["time"] = time
        return blocks, n

    def close(self) -> Path:
        """Flush, mark complete and move the store into place; returns its path."""
        if self._closed:
            return self.path
        if self.length is not None:
            if self._written < self.length:
                self.abort()
                raise DataError(f"store {self.path}: only {self._written} of {self.length} frames were written")
            self.T = self.length
        if self.T == 0:
            self.abort()
            raise DataError(f"store {self.path}: no frames were written")
        for buf in self._arrays.values():
            buf.flush()
        bad = [b for b in self.boundaries if not 0 < b < self.T]
        if bad or sorted(set(self.boundaries)) != self.boundaries:
            self.abort()
            raise DataError(f"store {self.path}: boundaries must increase strictly inside (0, {self.T}), got {self.boundaries}")
        self.root.attrs.update({"T": self.T, "complete": True, "boundaries": self.boundaries})
        self._closed = True
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._closed = True
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_recording(
    rec: Recording,
    path: str | os.PathLike,
    *,
    chunk_steps: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a recording (in memory or lazy) to a store, one time chunk at a time."""
    writer = RecordingWriter(
        path,
        n_neurons=rec.N,
        dt=rec.dt,
        channels=list(rec.channels),
        primary=rec.primary,
        stimulus_dims=rec.stimulus_dims,
        with_time=rec.time is not None,
        covariate_dims={k: int(v.shape[1]) for k, v in rec.covariates.items()},
        neuron_ids=rec.neuron_ids,
        cell_types=rec.cell_types,
        positions=rec.positions,
        connectome=rec.connectome,
        session=rec.session,
        provenance=rec.provenance,
        chunk_steps=chunk_steps,
        overwrite=overwrite,
        boundaries=rec.boundaries,
    )
    with writer:
        step = writer.chunk_steps
        for t0 in range(0, rec.T, step):
            t1 = min(rec.T, t0 + step)
            writer.append(
                {c: rec.read(t0, t1, channel=c) for c in rec.channels},
                stimulus=rec.read_stimulus(t0, t1),
                time=None if rec.time is None else rec.time[t0:t1],
                covariates={k: v[t0:t1] for k, v in rec.covariates.items()},
            )
    return Path(path)


def open_recording(path: str | os.PathLike) -> Recording:
    """Open a store lazily: arrays are read from disk only when sliced."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise DataError(f"store {path} does not exist")
    if not is_store(path):
        raise DataError(f"{path} is not a neurocast recording store (no zarr.json with format={FORMAT!r})")
    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=3)
        attrs = dict(root.attrs)
        if not attrs.get("complete"):
            raise DataError(f"store {path} is incomplete: writing it was interrupted; delete it and write it again")
        if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
            raise DataError(
                f"store {path} has format version {attrs['format_version']}, newer than this neurocast "
                f"({FORMAT_VERSION}); upgrade neurocast"
            )
        channels = {c: root[f"channels/{c}"] for c in attrs["channels"]}
        stimulus = root["stimulus"] if attrs.get("stimulus_dims") else None
        time = root["time"][:] if "time" in root else None
        covariates = {k: root[f"covariates/{k}"][:] for k in attrs.get("covariates", {})}
        neurons = root["neurons"]
        ids = neurons["ids"][:]
        cell_types = neurons["cell_types"][:] if "cell_types" in neurons else None
        positions = neurons["positions"][:] if "positions" in neurons else None
        connectome = None
        if "connectome" in root:
            g = root["connectome"]
            connectome = Connectome(g["indptr"][:], g["indices"][:], g["weights"][:], int(attrs["N"]))
    except DataError:
        raise
    except Exception as exc:  # corrupt metadata, missing arrays, unreadable chunks
        raise DataError(f"store {path} is unreadable: {type(exc).__name__}: {exc}") from exc
    T = int(attrs["T"])
    for name, arr in channels.items():
        if tuple(arr.shape) != (T, int(attrs["N"])):
            raise DataError(f"store {path}: channel {name!r} has shape {arr.shape}, expected ({T}, {attrs['N']})")
    provenance = dict(attrs.get("provenance", {}))
    provenance.setdefault("store", str(path))
    return Recording(
        channels=channels,
        primary=attrs["primary"],
        dt=attrs["dt"],
        stimulus=stimulus,
        time=time,
        covariates=covariates,
        neuron_ids=ids,
        cell_types=cell_types,
        positions=positions,
        connectome=connectome,
        session=attrs["session"],
        provenance=provenance,
        boundaries=attrs.get("boundaries") or None,
    )
