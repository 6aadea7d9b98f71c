"""neurocast's own on-disk store (``*.zarr`` folders written by RecordingWriter)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neurocast.data.recording import Recording
from neurocast.data.sources import register_source
from neurocast.data.store import is_store, open_recording


@register_source
class StoreSource:
    name = "store"
    description = "neurocast recording store (a .zarr folder)"
    patterns = "<name>.zarr folders written by neurocast"

    def matches(self, path: Path) -> bool:
        return path.is_dir() and is_store(path)

    def load(self, path: Path, options: Mapping[str, Any]) -> list[Recording]:
        return [open_recording(path)]
