"""Atomic checkpoints that let a killed run resume exactly.

A checkpoint is one ``torch.save`` file holding the model, optimizer and scheduler
states, every RNG state (python, numpy, torch, CUDA), epoch and step, the resolved config
and anything else the trainer adds. It is written to a temporary file in the same
folder, flushed and fsynced, then renamed over the target (and the folder fsynced), so
a kill at any moment leaves either the old file or the new one, never a mix.

Loading uses ``weights_only=True`` (no arbitrary code) and turns every failure into a
one-line :class:`~neurocast.errors.CheckpointError`: missing, truncated or corrupt files,
files that are not neurocast checkpoints, and model states whose keys or shapes differ
from the model being loaded. Nothing ever silently starts fresh.

A write the environment refuses (disk full, read-only folder, no permission) is a one-line
:class:`~neurocast.errors.StorageError` naming the file; the previous checkpoint stays.
:func:`resume_checkpoint` picks the newest checkpoint of a run that loads, and says which
checkpoints exist and why none can be used when that is the case.
"""

from __future__ import annotations

import os
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurocast.atomic import replaced_atomically
from neurocast.errors import CheckpointError, StorageError, storage_cause

FORMAT = "neurocast-checkpoint"
FORMAT_VERSION = 1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format tags) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    with replaced_atomically(path, lambda exc, p: _write_error(exc, p, payload)) as tmp:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(path.parent)
    return path


def _nbytes(obj: Any) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _write_error(exc: BaseException, path: Path, payload: dict[str, Any]) -> StorageError | None:
    """A failed checkpoint write as a one-line error naming the file and the cause."""
    cause = storage_cause(exc)
    if cause is not None:
        return StorageError(f"cannot write checkpoint {path}: {cause}")
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("unexpected pos" in text or "write failed" in text):
        # torch's zip writer reports a short write (a full disk) this way
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if free is not None and free < 2 * _nbytes(payload) + 2**20:
            return StorageError(f"cannot write checkpoint {path}: no space left on device (disk full, "
                                f"{free / 2**20:.1f} MiB free, the checkpoint needs ~{_nbytes(payload) / 2**20:.1f} "
                                "MiB)")
        return StorageError(f"cannot write checkpoint {path}: the write failed ({text.splitlines()[0]}); "
                            "is the disk full or over its quota?")
    return None


def checkpoint_readable(path: str | os.PathLike) -> bool:
    """Cheap check (no tensors read) that ``path`` is a complete torch checkpoint file:
    a zip archive whose directory (written last) is intact."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def resume_checkpoint(folder: str | os.PathLike, map_location: Any = "cpu") -> tuple[Path, dict[str, Any]]:
    """(path, state) of the newest checkpoint in ``folder`` that loads: latest.pt, else the
    others from the newest (a kill or a full disk may have damaged the last write).

    Raises CheckpointError naming every checkpoint that exists and why it cannot be used,
    or saying that none was written."""
    from neurocast.progress import warn

    folder = Path(folder)
    files = [p for p in folder.glob("*.pt") if p.is_file()] if folder.is_dir() else []
    if not files:
        raise CheckpointError(f"{folder} holds no checkpoint: the run stopped before its first checkpoint "
                              "was written; start it again")
    files.sort(key=lambda p: (p.name != "latest.pt", -p.stat().st_mtime))
    problems = []
    for p in files:
        try:
            state = load_checkpoint(p, map_location=map_location)
        except CheckpointError as exc:
            problems.append(f"{p.name}: {exc}")
            continue
        if problems:
            warn(f"resuming from {p} (epoch {state.get('epoch')}); skipped " + "; ".join(problems))
        return p, state
    raise CheckpointError(f"no usable checkpoint in {folder}: " + "; ".join(problems))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt and cannot be loaded ({reason}); "
            "use an earlier checkpoint from the same folder"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a neurocast checkpoint")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['format_version']}, newer than this neurocast supports"
        )
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, failing with the first differing keys/shapes instead of a torch traceback."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s) e.g. {missing[0]!r}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[0]!r}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) e.g. {shapes[0]}")
    if problems:
        raise CheckpointError(f"checkpoint {source} does not match the model: " + "; ".join(problems))
    model.load_state_dict(state_dict)


# ---------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """Every RNG state as plain lists/tensors (loadable with weights_only=True)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
