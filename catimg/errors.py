"""One family of errors for everything a user can get wrong.

Each error carries a one-line message that names the file, table, key or value at fault and says what to do.
The CLI maps them to exit codes in one place (``catimg.cli``) and never shows a traceback for them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CatimgError(Exception):
    """Base class: a user-facing problem with a one-line message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(CatimgError):
    """models.toml is missing, unreadable or invalid."""

    exit_code = 2


class InputError(CatimgError):
    """A prompt, prompt file, option value or other command-line input is invalid."""

    exit_code = 2


class RouterError(CatimgError):
    """A router artifact is missing, corrupt, of another format, or does not match catalog/encoder."""

    exit_code = 3


class MeasurementsError(CatimgError):
    """A measurements file or store is invalid."""

    exit_code = 4


class DeviceError(CatimgError):
    """The requested device is not available."""

    exit_code = 5


class WeightsMissingError(CatimgError):
    """A generator's weights are not available locally and downloads are off."""

    exit_code = 6


class GenerationError(CatimgError):
    """Generating an image failed in a way that stops the run."""

    exit_code = 7


class StoreError(CatimgError):
    """The calibration database is not catimg's, of a newer schema, or locked."""

    exit_code = 8


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""
