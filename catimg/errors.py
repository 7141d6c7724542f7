"""One family of errors for everything a user can get wrong.

Each error carries a one-line message that names the file, table, key or value at fault and says what to do.
The CLI maps them to exit codes in one place (``catimg.cli``) and never shows a traceback for them.
:class:`ExitStatus` names every exit code catimg uses (the README's table); :func:`first_line` is the one way
to quote another library's exception inside such a message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import IntEnum


class ExitStatus(IntEnum):
    """Every exit code of the ``catimg`` command (documented in the README's exit-code table)."""

    OK = 0
    ERROR = 1  # a command found a problem (`doctor`) or failed without a more specific code
    BAD_INPUT = 2  # models.toml, prompt, prompt file, option or budget (also click's usage errors)
    ROUTER = 3
    MEASUREMENTS = 4
    DEVICE = 5
    WEIGHTS_MISSING = 6
    GENERATION = 7
    STORE = 8
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): what was written is kept, the command to resume is printed


class CatimgError(Exception):
    """Base class: a user-facing problem with a one-line message."""

    exit_code: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(CatimgError):
    """models.toml is missing, unreadable or invalid."""

    exit_code = ExitStatus.BAD_INPUT


class InputError(CatimgError):
    """A prompt, prompt file, option value or other command-line input is invalid."""

    exit_code = ExitStatus.BAD_INPUT


class RouterError(CatimgError):
    """A router artifact is missing, corrupt, of another format, or does not match catalog/encoder."""

    exit_code = ExitStatus.ROUTER


class MeasurementsError(CatimgError):
    """A measurements file or store is invalid."""

    exit_code = ExitStatus.MEASUREMENTS


class DeviceError(CatimgError):
    """The requested device is not available."""

    exit_code = ExitStatus.DEVICE


class WeightsMissingError(CatimgError):
    """A generator's weights are not available locally and downloads are off."""

    exit_code = ExitStatus.WEIGHTS_MISSING


class GenerationError(CatimgError):
    """Generating an image failed in a way that stops the run."""

    exit_code = ExitStatus.GENERATION


class StoreError(CatimgError):
    """The calibration database is not catimg's, of a newer schema, or locked."""

    exit_code = ExitStatus.STORE


def first_line(exc: BaseException, *, typed: bool = False, limit: int | None = None) -> str:
    """The first non-blank line of ``exc``'s message, cut to ``limit`` characters; the class name when it has
    none.

    ``typed=True`` prefixes the class name (``OSError: disk full``). Never raises, whatever ``exc`` holds.
    """
    name = type(exc).__name__
    try:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    except Exception:  # a broken __str__ must not turn an error path into a crash
        lines = []
    if not lines:
        return name
    text = lines[0][:limit] if limit is not None else lines[0]
    return f"{name}: {text}" if typed else text


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""
