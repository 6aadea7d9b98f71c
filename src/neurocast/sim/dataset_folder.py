"""The folder a simulation writes: named by what determines its numbers, reused, never clobbered.

``<output_root>/<name>-<hash>/`` holds ``simulation.yaml`` (the resolved config), one store
per recording and a ``COMPLETE`` marker written last (the config hash and the stores).
Opening it for a config:

* complete and from the same config (same numbers-determining fields) -> reused once its
  stores verify (:func:`damaged_stores`); a missing, damaged or unverifiable store (no
  manifest) is removed and simulated again, never read as zeros;
* started by the same config but not complete -> finished (stores that exist and verify
  are kept; partial stores of killed writers are removed by the next writer);
* holding another simulation, or other files -> a clear error, nothing is overwritten.

One simulation per folder at a time: :func:`dataset_lock` (taken by ``neurocast.sim.simulate``)
makes a second process wait for the first and then reuse what it wrote.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from pydantic import BaseModel

from neurocast.config import ConfigError, config_hash, to_yaml, validate
from neurocast.data.store import damage_message, is_store, verify_store
from neurocast.errors import DataError
from neurocast.locks import FileLock, describe
from neurocast.progress import info, warn

COMPLETE = "COMPLETE"
#: fields that change where or how data are written, not the simulated numbers
NOT_IDENTITY = ("output_root", "description", "device", "block_steps")


def identity(cfg: BaseModel) -> dict:
    data = cfg.model_dump(mode="json")
    for key in NOT_IDENTITY:
        data.pop(key, None)
    return data


def dataset_folder(cfg: BaseModel, output: str | Path | None = None) -> Path:
    """``output`` if given, else ``<output_root>/<name>-<8-character identity hash>``."""
    if output is not None:
        return Path(output).expanduser()
    return Path(cfg.output_root).expanduser() / f"{cfg.name}-{config_hash(identity(cfg), 8)}"


def _saved_identity(saved: Path, schema: type[BaseModel]) -> str | None:
    try:
        data = yaml.safe_load(saved.read_text())
        old = validate(schema, data, f"config {saved}")
    except (OSError, yaml.YAMLError, ConfigError):
        return None
    return config_hash(identity(old), 16)


def open_dataset(cfg: BaseModel, output: str | Path | None = None) -> tuple[Path, bool]:
    """(folder, already complete); creates the folder and writes simulation.yaml when new."""
    folder = dataset_folder(cfg, output)
    saved = folder / "simulation.yaml"
    if saved.exists():
        if _saved_identity(saved, type(cfg)) != config_hash(identity(cfg), 16):
            raise DataError(
                f"{folder} holds a different simulation (its simulation.yaml differs from this config); "
                "choose another --output or delete that folder"
            )
        if (folder / COMPLETE).exists():
            info(f"reusing simulated dataset {folder}")
            return folder, True
    elif folder.exists() and any(folder.iterdir()):
        raise DataError(f"{folder} exists and is not a simulated dataset; choose another --output")
    folder.mkdir(parents=True, exist_ok=True)
    saved.write_text(to_yaml(cfg))
    return folder, False


def mark_complete(folder: Path, cfg: BaseModel) -> None:
    """Write COMPLETE: the identity hash, then one line per store of the dataset."""
    stores = sorted(p.name for p in folder.glob("*.zarr") if p.is_dir())
    (folder / COMPLETE).write_text("\n".join([config_hash(identity(cfg), 16), *stores]) + "\n")


def dataset_lock(folder: Path) -> FileLock:
    """The lock of a dataset folder (beside it, ``.<name>.lock``): waits for another process
    that is simulating into the same folder, then returns the held lock."""
    folder = Path(folder)
    return FileLock(folder.parent / f".{folder.name}.lock", f"dataset {folder}").acquire(
        wait=None, on_wait=lambda h: warn(f"waiting for {describe(h)} to finish writing {folder}"))


def store_problem(path: Path, mode: str = "changed") -> str | None:
    """Why a store of a dataset cannot be reused (None: it verifies)."""
    if not path.exists():
        return "it is missing"
    if not is_store(path):
        return "it is not a neurocast store"
    try:
        problems = verify_store(path, mode)  # a missing manifest raises: unverifiable or damaged
    except DataError as exc:
        return str(exc)
    return damage_message(path, problems) if problems else None


def damaged_stores(folder: Path, mode: str = "changed") -> dict[Path, str]:
    """Stores of a complete dataset that cannot be reused, with the reason. ``mode``:
    ``changed`` (sizes, and checksums of chunks modified since written) or ``full``."""
    lines = (folder / COMPLETE).read_text().split() if (folder / COMPLETE).is_file() else []
    names = set(lines[1:]) | {p.name for p in folder.glob("*.zarr") if p.is_dir()}
    out = {}
    for name in sorted(names):
        problem = store_problem(folder / name, mode)
        if problem is not None:
            out[folder / name] = problem
    return out


def reuse_or_repair(cfg: BaseModel, folder: Path, mode: str = "changed") -> None:
    """Before reusing a complete dataset of ``cfg``: stores that do not verify are removed
    (with a warning naming each) and the folder is marked incomplete, so the simulation
    writes them again. Folders of another simulation are left alone (open_dataset refuses them)."""
    if not (folder / COMPLETE).is_file():
        return
    if _saved_identity(folder / "simulation.yaml", type(cfg)) != config_hash(identity(cfg), 16):
        return
    bad = damaged_stores(folder, mode)
    for path, why in bad.items():
        warn(f"{path} cannot be reused ({why}); simulating it again")
        if path.exists():
            shutil.rmtree(path)
    if bad:
        (folder / COMPLETE).unlink()


def finished_store(path: Path) -> bool:
    """True when ``path`` is a complete store that verifies; a damaged or unverifiable one is
    removed (with a warning) so that it is written again."""
    if not (path.exists() and is_store(path)):
        return False
    problem = store_problem(path)
    if problem is None:
        return True
    warn(f"{path} cannot be reused ({problem}); simulating it again")
    shutil.rmtree(path)
    return False
