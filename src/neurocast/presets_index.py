"""Named experiments: the YAML presets shipped in neurocast/presets and the user's own folders.

A preset's name is its path below a presets folder without ".yaml" (``latent_20step``,
``sim/fly_small``); files starting with "_" are shared bases, not experiments. Extra
folders come from ``$NEUROCAST_PRESETS`` (colon-separated) or ``--presets-dir``; a user
preset with the same name as a built-in one takes precedence.

Every command resolves a name the same way (:func:`preset_path`): ``latent_20step``,
``latent_20step.yaml``, ``configs/latent_20step.yaml`` (``configs/`` is a link to the built-in
folder in a checkout) all name the same preset. ``neurocast run NAME`` takes a name
(:func:`find`); commands that take a config (``train``, ``sweep``, ``config show``, ...) take
a file as given when it exists, else a name (:func:`resolve_config_path`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from neurocast.config import read_yaml
from neurocast.errors import ConfigError

#: the built-in presets (shipped with the package; ``configs/`` in a checkout links here)
PRESETS = Path(__file__).resolve().parent / "presets"


@dataclass
class Preset:
    name: str
    path: Path
    task: str
    description: str


def preset_dirs(extra: list[str] | None = None) -> list[Path]:
    """The folders searched for presets, first match wins: ``extra``, $NEUROCAST_PRESETS, the built-in ones."""
    dirs = [Path(p).expanduser() for p in (extra or [])]
    dirs += [Path(p).expanduser() for p in os.environ.get("NEUROCAST_PRESETS", "").split(os.pathsep) if p]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"presets folder {d} does not exist")
    return dirs + [PRESETS]


def preset_files(extra: list[str] | None = None) -> dict[str, Path]:
    """Every preset's file by name (without reading them)."""
    found: dict[str, Path] = {}
    for root in preset_dirs(extra):
        for p in sorted(root.rglob("*.yaml")):
            if not p.name.startswith("_"):
                found.setdefault(str(p.relative_to(root).with_suffix("")), p)  # an earlier folder (the user's) wins
    return dict(sorted(found.items()))


def presets(extra: list[str] | None = None) -> dict[str, Preset]:
    """Every preset by name (a file that does not parse is listed with task ERROR and what is wrong)."""
    found: dict[str, Preset] = {}
    for name, p in preset_files(extra).items():
        try:
            data = read_yaml(p)
        except ConfigError as exc:  # listed, with what is wrong with it
            found[name] = Preset(name, p, "ERROR", str(exc))
            continue
        found[name] = Preset(name, p, str(data.get("task", "?")), str(data.get("description", "")).strip())
    return found


def preset_name(text: str | os.PathLike) -> str:
    """The preset name a command-line word means: without a leading ``configs/`` and a trailing ``.yaml``."""
    parts = Path(text).parts
    name = str(Path(*parts[1:])) if len(parts) > 1 and parts[0] == "configs" else str(Path(text))
    return name[:-5] if name.endswith(".yaml") else name


def preset_path(text: str | os.PathLike, extra: list[str] | None = None) -> Path | None:
    """The file of the preset ``text`` names, or None."""
    return preset_files(extra).get(preset_name(text))


def find(name: str, extra: list[str] | None = None) -> Path:
    """The file of a named experiment; a one-line error with the closest name when there is none."""
    path = preset_path(name, extra)
    if path is not None:
        return path
    close = difflib.get_close_matches(preset_name(name), list(preset_files(extra)), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"no experiment named {name!r}{hint}; `neurocast experiments` lists them")


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file as given when it exists, else the preset it names (``latent_20step``,
    ``configs/sim/fly_small.yaml``; user folders from $NEUROCAST_PRESETS first)."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    found = preset_path(path)
    if found is not None:
        return found
    raise ConfigError(f"config file {path} does not exist (neither here nor a preset: `neurocast experiments` lists "
                      "them)")
