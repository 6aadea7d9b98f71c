"""Zebrafish optic-tectum calcium recordings (Triplett, Avitan & Goodhill 2018).

Each fish has ``<fish>_activity_matrix.csv`` (comma-separated, ONE ROW PER NEURON, one
column per frame, dF/F) and optionally ``<fish>_cell_coordinates.csv`` (x,y per neuron,
same row order). The frame interval is not stored in these files, so the ``dt`` option
(seconds) is required.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.data.recording import Recording
from neurocast.data.sources import register_source
from neurocast.errors import DataError

SUFFIX = "_activity_matrix.csv"
COORDS = "_cell_coordinates.csv"


def read_numeric_csv(path: Path, what: str) -> np.ndarray:
    """A rectangular numeric CSV as a 2-D float64 array, with file/row/column in every error."""
    rows: list[list[float]] = []
    width = None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what}: {exc}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.split(",")
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            raise DataError(f"{path}: ragged {what}: row {lineno} has {len(cells)} values, row 1 has {width}")
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            bad = next(i for i, c in enumerate(cells) if not _is_float(c))
            raise DataError(f"{path}: row {lineno}, column {bad + 1}: {cells[bad].strip()!r} is not a number") from None
    if not rows:
        raise DataError(f"{path}: {what} is empty")
    return np.asarray(rows, dtype=np.float64)


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


@register_source
class ZebrafishTectumCSV:
    name = "zebrafish_csv"
    description = "zebrafish tectum CSV, one row per neuron (needs dt)"
    patterns = "<fish>_activity_matrix.csv (+ <fish>_cell_coordinates.csv)"

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.name.endswith(SUFFIX)

    def load(self, path: Path, options: Mapping[str, Any]) -> list[Recording]:
        dt = options.get("dt")
        if dt is None:
            raise DataError(
                f"{path}: zebrafish CSV files do not store the frame interval; give dt in seconds "
                "(--dt on the command line, or the dataset's dt in a config)"
            )
        matrix = read_numeric_csv(path, "activity matrix")
        fish = path.name[: -len(SUFFIX)]
        coords_path = path.with_name(fish + COORDS)
        positions = None
        if coords_path.exists():
            positions = read_numeric_csv(coords_path, "cell coordinates")
            if positions.shape[0] != matrix.shape[0]:
                raise DataError(
                    f"{coords_path}: {positions.shape[0]} neurons but {path.name} has {matrix.shape[0]} rows"
                )
        return [
            Recording(
                matrix.T,  # one row per neuron in the file; (T, N) here
                dt,
                positions=positions,
                neuron_ids=[f"cell{i}" for i in range(matrix.shape[0])],
                session=fish,
                provenance={"source": self.name, "file": str(path),
                            "coordinates": str(coords_path) if positions is not None else None},
            )
        ]
