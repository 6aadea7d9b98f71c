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

    manifest.json          every file's size, CRC-32 and modification time (written last)

Writing is incremental (:class:`RecordingWriter` appends blocks of frames, buffering at
most one time chunk per array) and atomic: data goes to ``<name>.zarr.partial-<pid>``
and is renamed into place only when :meth:`RecordingWriter.close` finishes, so a killed
writer never leaves a store that looks complete. One writer per store: the writer holds
a lock (``.<name>.zarr.lock`` beside the store) and removes partial folders that killed
writers of the same store left behind.

Integrity: the writer checksums every chunk as zarr writes it and records the result in
``manifest.json``, written atomically after everything else. Opening a store checks that
every file in the manifest is present with its size (one ``stat`` per chunk, no data
read); every chunk a read decodes is checked against its CRC-32 on the way (the bytes are
in memory already: ~3 GB/s of compressed data on one core); :func:`verify_store`
(``neurocast data verify``) re-checksums everything. A missing, truncated or corrupt
chunk is a one-line DataError naming the store, the array and the frames it holds, never
zeros or changed values. Reading opens arrays lazily; any time range can be read without
touching the rest. Stores written before manifests existed are read unverified.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time as _time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.atomic import replaced_atomically
from neurocast.data.connectome import Connectome
from neurocast.data.recording import Recording, check_finite
from neurocast.errors import DataError, StorageError, storage_cause
from neurocast.locks import FileLock

FORMAT = "neurocast-recording"
FORMAT_VERSION = 1
TARGET_CHUNK_BYTES = 8 * 2**20
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "neurocast-manifest"


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


def _recording_store_class():
    """A zarr LocalStore that records the size and CRC-32 of every file zarr writes."""
    from zarr.storage import LocalStore

    class RecordingStore(LocalStore):
        def __init__(self, root, *, read_only: bool = False, record: dict | None = None):
            super().__init__(root, read_only=read_only)
            self.record: dict[str, tuple[int, int]] = {} if record is None else record

        def with_read_only(self, read_only: bool = False):
            return type(self)(self.root, read_only=read_only, record=self.record)

        async def _set(self, key, value, exclusive=False):
            await super()._set(key, value, exclusive)
            data = value.as_buffer_like()
            self.record[key] = (memoryview(data).nbytes, await asyncio.to_thread(zlib.crc32, data))

        async def delete(self, key):
            await super().delete(key)
            for k in [k for k in self.record if k == key or k.startswith(key.rstrip("/") + "/")]:
                del self.record[k]

    return RecordingStore


class ChunkError(Exception):
    """A chunk that a read found missing or different from what was written."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key} {problem}")
        self.key = key
        self.problem = problem


def _verifying_store_class():
    """A read-only zarr LocalStore that checks every whole file it reads against the manifest."""
    from zarr.storage import LocalStore

    class VerifyingStore(LocalStore):
        def __init__(self, root, *, read_only: bool = True, files: dict | None = None):
            super().__init__(root, read_only=read_only)
            self.files: dict[str, list] = files or {}

        def with_read_only(self, read_only: bool = True):
            return type(self)(self.root, read_only=read_only, files=self.files)

        async def get(self, key, prototype=None, byte_range=None):
            buf = await super().get(key, prototype, byte_range)
            entry = self.files.get(key)
            if entry is None or byte_range is not None:
                return buf
            if buf is None:  # zarr would read a missing chunk as fill values (zeros)
                raise ChunkError(key, "is missing")
            data = buf.as_buffer_like()
            size = memoryview(data).nbytes
            if size != int(entry[0]):
                raise ChunkError(key, f"has {size} bytes, {entry[0]} were written")
            if await asyncio.to_thread(zlib.crc32, data) != int(entry[1]):  # overlaps the other reads
                raise ChunkError(key, "does not match its checksum (corrupt)")
            return buf

    return VerifyingStore


def _crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(16 * 2**20)
            if not block:
                return crc
            crc = zlib.crc32(block, crc)


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """The store's manifest (None for stores written before manifests existed)."""
    mp = Path(path) / MANIFEST
    if not mp.is_file():
        return None
    try:
        data = json.loads(mp.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"store {path} is damaged: its {MANIFEST} is unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), dict):
        raise DataError(f"store {path} is damaged: {MANIFEST} is not a neurocast manifest")
    return data


def _where(key: str, manifest: dict[str, Any]) -> str:
    """Which array and frames a store file holds, for messages."""
    array, sep, index = key.partition("/c/")
    if not sep:
        return "metadata"
    try:
        first = int(index.split("/")[0])
    except ValueError:
        return f"array {array!r} (file {key})"
    chunks = manifest.get("chunks", {}).get(array)
    frames = manifest.get("time_arrays", [])
    if chunks and array in frames:
        a = first * int(chunks[0])
        b = min(a + int(chunks[0]), int(manifest.get("T", a + int(chunks[0]))))
        return f"array {array!r} frames [{a}, {b})"
    return f"array {array!r} chunk {index}"


def verify_store(path: str | os.PathLike, mode: str = "full") -> list[str]:
    """Problems found in a store (empty list: intact). Raises DataError when it has no manifest.

    ``mode``: ``presence`` (every file in the manifest exists with its size: one stat per
    file), ``changed`` (presence, plus the CRC-32 of files whose modification time changed
    since they were verified: cheap unless the store was copied without times), ``full``
    (presence and every checksum). Verified modification times are written back to the
    manifest (best effort), so later checks are stat-only again."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        if store_attrs(path).get("manifest"):
            raise DataError(f"store {path} is damaged: its {MANIFEST} is missing")
        raise DataError(f"store {path} has no {MANIFEST} (written by an older neurocast): it cannot be verified; "
                        "write it again")
    problems: list[str] = []
    recheck: list[tuple[str, Path, int, int]] = []
    for key, entry in sorted(manifest["files"].items()):
        size, crc, mtime = int(entry[0]), int(entry[1]), int(entry[2]) if len(entry) > 2 else -1
        fp = path / key
        try:
            st = fp.stat()
        except FileNotFoundError:
            problems.append(f"{_where(key, manifest)}: {key} is missing")
            continue
        except OSError as exc:
            problems.append(f"{_where(key, manifest)}: {key} cannot be read ({exc.strerror})")
            continue
        if st.st_size != size:
            problems.append(f"{_where(key, manifest)}: {key} has {st.st_size} bytes, {size} were written")
        elif mode == "full" or (mode == "changed" and st.st_mtime_ns != mtime):
            recheck.append((key, fp, crc, st.st_mtime_ns))
    refreshed = False
    from neurocast.progress import progress

    bar = progress(total=sum(int(manifest["files"][k][0]) for k, _, _, _ in recheck), desc=f"verify {path.name}",
                   unit="B", unit_scale=True, enabled=len(recheck) > 64)
    for key, fp, crc, mtime in recheck:
        bar.update(int(manifest["files"][key][0]))
        try:
            ok = _crc32_file(fp) == crc
        except OSError as exc:
            problems.append(f"{_where(key, manifest)}: {key} cannot be read ({exc.strerror})")
            continue
        if not ok:
            problems.append(f"{_where(key, manifest)}: {key} does not match its checksum (corrupt)")
        elif len(manifest["files"][key]) > 2 and manifest["files"][key][2] != mtime:
            manifest["files"][key][2] = mtime
            refreshed = True
    bar.close()
    if refreshed and not problems:
        try:
            _write_manifest_file(path, manifest)
        except OSError:
            pass  # read-only: the next check hashes those chunks again
    return problems


def store_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a store's root zarr.json ({} when unreadable)."""
    try:
        return json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {}) or {}
    except (OSError, ValueError, AttributeError):
        return {}


def damage_message(path: Path, problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return f"store {path} is damaged: {problems[0]}{more}; write it again (simulated data: run the simulation again)"


def _write_manifest_file(folder: Path, manifest: dict[str, Any]) -> None:
    with replaced_atomically(folder / MANIFEST, lambda exc, p: None) as tmp:
        with open(tmp, "w") as f:
            f.write(json.dumps(manifest, separators=(",", ":")))
            f.flush()
            os.fsync(f.fileno())


class _StoreArray:
    """A lazy store array whose read failures name the store, the array and the frames."""

    def __init__(self, array, store: Path, name: str, manifest: dict[str, Any] | None = None):
        self._array = array
        self._store = store
        self._name = name
        self._manifest = manifest
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.chunks = tuple(array.chunks)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        try:
            return self._array[index]
        except ChunkError as exc:
            raise DataError(damage_message(self._store, [f"{_where(exc.key, self._manifest or {})}: "
                                                          f"{exc.key} {exc.problem}"])) from None
        except Exception as exc:
            first = index[0] if isinstance(index, tuple) else index
            where = (f"frames [{first.start or 0}, {self.shape[0] if first.stop is None else first.stop})"
                     if isinstance(first, slice) else f"index {index!r}")
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"store {self._store}: array {self._name!r} {where} cannot be read ({reason}); the store "
                            f"is damaged (check it with `neurocast data verify {self._store}`)") from None


def _read_small(root, name: str, store: Path) -> np.ndarray:
    try:
        return root[name][:]
    except ChunkError as exc:
        raise DataError(damage_message(store, [f"array {name!r}: {exc.key} {exc.problem}"])) from None
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"store {store}: array {name!r} cannot be read ({reason}); the store is damaged") from None


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
        self.overwrite = overwrite
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
        self._closed = False
        self._lock: FileLock | None = None
        with self._io("create"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # one writer per store; with the lock held, every partial folder of this store
            # is a killed writer's leftover
            self._lock = FileLock(self.path.with_name(f".{self.path.name}.lock"), f"store {self.path}").acquire()
            if self.path.exists() and not overwrite:
                self._release()
                raise DataError(f"store {self.path} already exists (refusing to overwrite it)")
            for stale in self.path.parent.glob(f"{self.path.name}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)
            self._files: dict[str, tuple[int, int]] = {}
            self.root = zarr.open_group(store=_recording_store_class()(self.tmp, record=self._files), mode="w",
                                        zarr_format=3)
        self.T = 0
        self._last_time: float | None = None

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
        with self._io("write"):
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
        with self._io("write"):
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
        bad = [b for b in self.boundaries if not 0 < b < self.T]
        if bad or sorted(set(self.boundaries)) != self.boundaries:
            self.abort()
            raise DataError(f"store {self.path}: boundaries must increase strictly inside (0, {self.T}), got "
                            f"{self.boundaries}")
        with self._io("write"):
            for buf in self._arrays.values():
                buf.flush()
            self.root.attrs.update({"T": self.T, "complete": True, "boundaries": self.boundaries, "manifest": MANIFEST})
            self._write_manifest()
            if self.path.exists():
                if not self.overwrite:
                    self.abort()
                    raise DataError(f"store {self.path} appeared while it was being written (refusing to overwrite it)")
                shutil.rmtree(self.path)
            self._closed = True
            os.replace(self.tmp, self.path)
        self._release()
        return self.path

    def _write_manifest(self) -> None:
        """Sizes, CRC-32s and modification times of every file zarr wrote; written last."""
        files = {}
        for key, (size, crc) in sorted(self._files.items()):
            st = (self.tmp / key).stat()
            if st.st_size != size:  # pragma: no cover - the file system lost a write
                raise DataError(f"store {self.path}: {key} has {st.st_size} bytes on disk, {size} were written")
            files[key] = [size, crc, st.st_mtime_ns]
        chunks = {name: list(buf.array.chunks) for name, buf in self._arrays.items()}
        _write_manifest_file(self.tmp, {
            "format": MANIFEST_FORMAT, "version": 1, "checksum": "crc32", "T": self.T,
            "time_arrays": sorted(chunks), "chunks": chunks, "files": files,
            "written": _time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })

    @contextmanager
    def _io(self, action: str):
        """Environment failures (disk full, read-only, permission) as one line naming the store."""
        try:
            yield
        except OSError as exc:
            cause = storage_cause(exc)
            if cause is None:
                raise
            self.abort()
            raise StorageError(f"cannot {action} store {self.path} (in {getattr(exc, 'filename', None) or self.tmp}): "
                               f"{cause}") from None

    def abort(self) -> None:
        self._closed = True
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

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


def open_recording(path: str | os.PathLike, verify: str = "presence") -> Recording:
    """Open a store lazily: arrays are read from disk only when sliced, each chunk checked
    against its checksum as it is read.

    ``verify`` on opening: ``presence`` (default: every chunk present with its size),
    ``changed`` (also re-checksum chunks modified since written), ``full`` (every
    checksum: reads the whole store)."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise DataError(f"store {path} does not exist")
    if not is_store(path):
        raise DataError(f"{path} is not a neurocast recording store (no zarr.json with format={FORMAT!r})")
    try:
        manifest = read_manifest(path)
        store = _verifying_store_class()(path, files=manifest["files"] if manifest else None)
        root = zarr.open_group(store=store, mode="r", zarr_format=3)
        attrs = dict(root.attrs)
        if manifest is None and attrs.get("manifest"):
            raise DataError(f"store {path} is damaged: its {MANIFEST} is missing")
        if not attrs.get("complete"):
            raise DataError(f"store {path} is incomplete: writing it was interrupted; delete it and write it again")
        if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
            raise DataError(
                f"store {path} has format version {attrs['format_version']}, newer than this neurocast "
                f"({FORMAT_VERSION}); upgrade neurocast"
            )
        if verify != "none" and manifest is not None:
            problems = verify_store(path, verify)
            if problems:
                raise DataError(damage_message(path, problems))
        channels = {c: _StoreArray(root[f"channels/{c}"], path, f"channels/{c}", manifest) for c in attrs["channels"]}
        stimulus = _StoreArray(root["stimulus"], path, "stimulus", manifest) if attrs.get("stimulus_dims") else None
        time = _read_small(root, "time", path) if "time" in root else None
        covariates = {k: _read_small(root, f"covariates/{k}", path) for k in attrs.get("covariates", {})}
        neurons = root["neurons"]
        ids = _read_small(root, "neurons/ids", path)
        cell_types = _read_small(root, "neurons/cell_types", path) if "cell_types" in neurons else None
        positions = _read_small(root, "neurons/positions", path) if "positions" in neurons else None
        connectome = None
        if "connectome" in root:
            connectome = Connectome(_read_small(root, "connectome/indptr", path),
                                    _read_small(root, "connectome/indices", path),
                                    _read_small(root, "connectome/weights", path), int(attrs["N"]))
    except DataError:
        raise
    except Exception as exc:  # corrupt metadata, missing arrays
        cause = storage_cause(exc)
        if cause is not None:
            raise StorageError(f"cannot read store {path}: {cause}") from None
        raise DataError(f"store {path} is unreadable: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
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
