"""User-facing errors.

Every error a user can cause by bad input (a file, a config value, a command-line flag)
is a :class:`NeurocastError` whose message is one line naming the field, file or value.
The CLI prints it and exits with status 2; a Python traceback only appears with --debug.
"""

from __future__ import annotations

import errno as _errno
from contextlib import contextmanager


class NeurocastError(Exception):
    """Base class for errors caused by bad input; the message is shown to the user as is."""

    def __init__(self, message: str):
        # Keep messages on one line: the CLI prints exactly this text.
        super().__init__(" ".join(str(message).split()))


class DataError(NeurocastError):
    """A recording, a data file or a data folder is invalid or unreadable."""


class ConfigError(NeurocastError):
    """A config file or a command-line override is invalid."""


class CheckpointError(NeurocastError):
    """A checkpoint is missing, truncated, or does not match the model/config."""


class RunError(NeurocastError):
    """A run directory is missing or not usable for the requested action."""


class TrainingError(NeurocastError):
    """Training cannot go on (for example the loss became NaN/Inf)."""


class LockedError(NeurocastError):
    """A run, dataset or store is being written by another process."""


class StorageError(NeurocastError):
    """The environment refused a read or write: disk full, read-only folder, no permission."""


#: errno -> the cause as a user reads it (the errors that the environment, not neurocast, causes)
STORAGE_ERRNOS = {
    _errno.ENOSPC: "no space left on device (disk full)",
    getattr(_errno, "EDQUOT", _errno.ENOSPC): "disk quota exceeded",
    _errno.EROFS: "read-only file system",
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.EFBIG: "file too large for this file system",
    _errno.EIO: "input/output error (failing disk or lost network mount)",
}


def storage_cause(exc: BaseException) -> str | None:
    """The user-facing cause of an environment failure (an OSError errno), or None."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return STORAGE_ERRNOS[exc.errno]
    return None


def storage_error(exc: BaseException, path=None, action: str = "write") -> StorageError | None:
    """A one-line StorageError naming the path and the cause, or None if ``exc`` is not one."""
    cause = storage_cause(exc)
    if cause is None:
        return None
    where = getattr(exc, "filename", None) or path or "a file"
    return StorageError(f"cannot {action} {where}: {cause}")


@contextmanager
def environment_errors(path=None, action: str = "write"):
    """Inside: an OSError the environment caused becomes a one-line StorageError naming the
    file it concerns (else ``path``); other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        err = storage_error(exc, path, action)
        if err is None:
            raise
        raise err from None
