"""Progress bars on stderr (tqdm), off in quiet mode (``--quiet`` or NEUROCAST_QUIET=1)."""

from __future__ import annotations

import os
import sys


def quiet() -> bool:
    return os.environ.get("NEUROCAST_QUIET", "") not in ("", "0", "false")


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", enabled: bool = True, **kw):
    """A tqdm bar writing to stderr; a silent pass-through when quiet."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=(not enabled) or quiet(),
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
        **kw,
    )


def info(message: str) -> None:
    """A status line on stderr (silent in quiet mode)."""
    if not quiet():
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A message on stderr that quiet mode does not silence (failures, skipped work)."""
    print(message, file=sys.stderr, flush=True)
