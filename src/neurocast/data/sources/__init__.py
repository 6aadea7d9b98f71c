"""Sources: plugins that turn files (or simulations) into Recordings.

A source is an object with a ``name``, a one-line ``description``, the file ``patterns`` it
reads (for ``neurocast data formats``), ``matches(path)`` (can it read this file or folder?)
and ``load(path, options) -> list[Recording]``.
Adding a dataset means adding one source: write a module with a class like the ones in
this package, decorate it with :func:`register_source`, and import it here (or expose it
from your own package through the ``neurocast.sources`` entry-point group).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from neurocast.data.recording import Recording
from neurocast.data.store import is_store
from neurocast.errors import DataError


class Source(Protocol):
    name: str
    description: str
    patterns: str

    def matches(self, path: Path) -> bool: ...

    def load(self, path: Path, options: Mapping[str, Any]) -> list[Recording]: ...


_SOURCES: dict[str, Source] = {}
_PLUGINS_LOADED = False


def register_source(cls):
    """Class decorator: instantiate and register a source under ``cls.name``."""
    inst = cls()
    _SOURCES[inst.name] = inst
    return cls


def sources() -> dict[str, Source]:
    """All registered sources, including third-party ``neurocast.sources`` entry points."""
    global _PLUGINS_LOADED
    if not _PLUGINS_LOADED:
        _PLUGINS_LOADED = True
        for ep in entry_points(group="neurocast.sources"):
            try:
                ep.load()
            except Exception as exc:  # a broken plugin must not break the built-in sources
                raise DataError(f"source plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    return dict(_SOURCES)


def _find_source(path: Path, fmt: str | None) -> Source | None:
    registry = sources()
    if fmt is not None:
        if fmt not in registry:
            raise DataError(f"unknown data format {fmt!r}; known formats: {', '.join(sorted(registry))}")
        return registry[fmt]
    for src in registry.values():
        if src.matches(path):
            return src
    return None


def load_recordings(
    path: str | os.PathLike, *, format: str | None = None, **options: Any
) -> list[Recording]:
    """Load a file, a store or a folder of session files as a list of Recordings.

    ``format`` forces a source by name; otherwise the source is found from the path.
    ``options`` go to the source (for example ``dt=0.2`` for zebrafish CSV files).
    A folder that is not itself a store loads every file in it that a source can read,
    in sorted order, and likewise inside its subfolders (a DANDI download keeps each
    subject's NWB files in ``sub-*/``); files a source reads as companions (coordinates)
    are skipped.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    src = _find_source(path, format)
    if src is not None:
        recs = src.load(path, options)
    elif path.is_dir():
        recs = _load_folder(path, format, options)
        if not recs:
            known = "; ".join(f"{s.name}: {s.description}" for s in sources().values())
            raise DataError(f"{path}: no readable session files in this folder (known formats: {known})")
    else:
        known = ", ".join(sorted(sources()))
        raise DataError(f"{path}: unrecognised data file (known formats: {known}); pass --format to choose one")
    sessions = [r.session for r in recs]
    dupes = sorted({s for s in sessions if sessions.count(s) > 1})
    if dupes:
        raise DataError(f"{path}: several recordings have the same session id {dupes[0]!r}")
    return recs


def _load_folder(path: Path, format: str | None, options: Mapping[str, Any]) -> list[Recording]:
    recs: list[Recording] = []
    for child in sorted(path.iterdir()):
        if child.name.startswith(".") or ".partial-" in child.name:
            continue
        if child.suffix == ".zarr" and child.is_dir() and not is_store(child):  # never skip a damaged store
            raise DataError(f"{child} is not a readable neurocast store (its zarr.json is missing or damaged)")
        child_src = _find_source(child, format)
        if child_src is not None:
            recs.extend(child_src.load(child, options))
        elif child.is_dir() and not child.is_symlink():
            recs.extend(_load_folder(child, format, options))
    return recs


# Built-in sources register themselves on import.
from neurocast.data.sources import flavell, nwb, store_source, wormwideweb, zebrafish  # noqa: E402,F401

__all__ = ["Source", "load_recordings", "register_source", "sources"]
