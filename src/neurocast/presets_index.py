"""Named experiments: the YAML presets shipped in neurocast/presets and the user's own folders.

A preset's name is its path below a presets folder without ".yaml" (``latent_20step``,
``sim/fly_small``); files starting with "_" are shared bases, not experiments. Extra
folders come from ``$NEUROCAST_PRESETS`` (colon-separated) or ``--presets-dir``; a user
preset with the same name as a built-in one takes precedence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from neurocast.config import read_yaml
from neurocast.errors import ConfigError
from neurocast.pipelines.common import PRESETS


@dataclass
class Preset:
    name: str
    path: Path
    task: str
    description: str


def preset_dirs(extra: list[str] | None = None) -> list[Path]:
    dirs = [Path(p).expanduser() for p in (extra or [])]
    dirs += [Path(p).expanduser() for p in os.environ.get("NEUROCAST_PRESETS", "").split(os.pathsep) if p]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"presets folder {d} does not exist")
    return dirs + [PRESETS]


def presets(extra: list[str] | None = None) -> dict[str, Preset]:
    found: dict[str, Preset] = {}
    for root in preset_dirs(extra):
        for p in sorted(root.rglob("*.yaml")):
            if p.name.startswith("_"):
                continue
            name = str(p.relative_to(root).with_suffix(""))
            if name in found:
                continue  # an earlier folder (the user's) wins
            try:
                data = read_yaml(p)
            except ConfigError as exc:  # listed, with what is wrong with it
                found[name] = Preset(name, p, "ERROR", str(exc))
                continue
            found[name] = Preset(name, p, str(data.get("task", "?")), str(data.get("description", "")).strip())
    return dict(sorted(found.items()))


def find(name: str, extra: list[str] | None = None) -> Path:
    import difflib

    table = presets(extra)
    key = name[:-5] if name.endswith(".yaml") else name
    if key in table:
        return table[key].path
    close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"no experiment named {name!r}{hint}; `neurocast experiments` lists them")
