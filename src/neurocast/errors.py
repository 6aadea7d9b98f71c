"""User-facing errors.

Every error a user can cause by bad input (a file, a config value, a command-line flag)
is a :class:`NeurocastError` whose message is one line naming the field, file or value.
The CLI prints it and exits with status 2; a Python traceback only appears with --debug.
"""

from __future__ import annotations


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
