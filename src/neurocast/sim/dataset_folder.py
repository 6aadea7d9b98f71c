"""The folder a simulation writes: named by what determines its numbers, reused, never clobbered.

``<output_root>/<name>-<hash>/`` holds ``simulation.yaml`` (the resolved config), one store
per recording and a ``COMPLETE`` marker written last. Opening it for a config:

* complete and from the same config (same numbers-determining fields) -> reused as is;
* started by the same config but not complete -> finished (stores that exist are kept);
* holding another simulation, or other files -> a clear error, nothing is overwritten.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

from neurocast.config import ConfigError, config_hash, to_yaml, validate
from neurocast.data.store import is_store, open_recording
from neurocast.errors import DataError
from neurocast.progress import info

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
    (folder / COMPLETE).write_text(config_hash(identity(cfg), 16) + "\n")


def finished_store(path: Path) -> bool:
    """True when ``path`` is a complete store; a damaged one is an error."""
    if not (path.exists() and is_store(path)):
        return False
    try:
        open_recording(path)
    except DataError:
        raise DataError(f"{path} is damaged; delete it and run simulate again") from None
    return True
