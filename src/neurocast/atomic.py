"""Atomic file writes: a temporary file beside the target, renamed over it when complete.

A kill at any moment leaves the old file or the new one, never a mix; a failed write
removes its temporary file, and a failure caused by the environment (disk full,
read-only folder, no permission) becomes a one-line StorageError naming the target.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from neurocast.errors import NeurocastError, storage_error


@contextmanager
def replaced_atomically(
    path: str | os.PathLike, describe: Callable[[BaseException, Path], NeurocastError | None] = storage_error
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block has written it, it replaces
    ``path``. ``describe(exc, path)`` turns a failure into a user-facing error (None: re-raise)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        err = describe(exc, path)
        if err is None:
            raise
        raise err from None
