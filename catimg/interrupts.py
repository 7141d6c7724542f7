"""Ctrl-C handled the same way at every moment of a ``catimg`` command.

:func:`install` runs first thing in the command-line entry point, before typer, rich or any command module is
imported. Until :func:`arm` (called by ``catimg.cli.main``), a SIGINT is only recorded: no
``KeyboardInterrupt`` escapes from half-finished imports as a traceback. From :func:`arm` on, SIGINT raises
``KeyboardInterrupt`` as usual and is also recorded, so that an interrupt that some code swallows (one raised
inside a ``__del__`` or a weakref callback, which Python reports as "Exception ignored ..." and drops) is not
lost: :func:`check` raises it again at the next safe point (the executor between images) and ``main`` ends
with exit 130 instead of 0. Such swallowed interrupts are not printed.

A CPython quirk is undone here too (:func:`settle`): when a KeyboardInterrupt passes through Python code that
a C extension ran with ``PyRun_String`` (torch and other extensions do so while they are imported), CPython
remembers it as "unhandled" even after ``main`` caught it, and ``python -m catimg`` then ends by killing
itself with SIGINT (status -2) instead of exiting 130. Seen as one run in about eight when Ctrl-C came while
pipelines were loading.

Only the command-line entry point installs anything; importing catimg as a library changes no signal handling.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

#: Test-only: a file that :func:`install` creates once catimg handles Ctrl-C (before that, in the first
#: milliseconds of the interpreter, Python's own handling applies and nothing of catimg has run yet).
TEST_READY_ENV = "CATIMG_TEST_READY_FILE"

_requested = False
_armed = False
_installed = False
_reported = False


def _handler(signum: int, frame: Any) -> None:
    global _requested
    _requested = True
    if _armed:
        raise KeyboardInterrupt


def _unraisable(args: Any, _previous: Any = sys.unraisablehook) -> None:
    """An interrupt raised where Python cannot propagate it is kept (as requested), not printed."""
    if args.exc_type is not None and issubclass(args.exc_type, KeyboardInterrupt):
        global _requested
        _requested = True
        return
    _previous(args)


def install() -> None:
    """Record SIGINT from now on (no KeyboardInterrupt until :func:`arm`)."""
    global _installed
    if _installed:
        return
    try:
        signal.signal(signal.SIGINT, _handler)
    except ValueError:  # not the main thread (an embedding application): leave its handling alone
        return
    sys.unraisablehook = _unraisable
    _installed = True
    ready = os.environ.get(TEST_READY_ENV)
    if ready:
        open(ready, "a").close()


def arm() -> None:
    """From now on SIGINT raises KeyboardInterrupt; one received before raises it at once."""
    global _armed
    _armed = True
    check()


def requested() -> bool:
    """True once a SIGINT arrived (also when the KeyboardInterrupt it raised was swallowed)."""
    return _requested


def mark_reported() -> None:
    """A command said itself what its interrupt left behind (and how to resume): ``main`` adds no line."""
    global _reported
    _reported = True


def reported() -> bool:
    return _reported


def check() -> None:
    """Raise KeyboardInterrupt when a SIGINT arrived that nobody acted on yet."""
    if _requested:
        raise KeyboardInterrupt


def settle() -> None:
    """Forget CPython's "unhandled KeyboardInterrupt" mark once catimg has handled the interrupt itself.

    CPython sets that mark whenever a KeyboardInterrupt leaves code run through ``PyRun_String`` (as C
    extensions do), even when the exception is caught later, and at exit turns it into death by SIGINT. Every
    successful ``PyRun_String`` call clears the mark first, so one harmless call clears it. Not CPython, or no
    ``pythonapi``: nothing to do.
    """
    try:
        import ctypes

        run = ctypes.pythonapi.PyRun_String
    except (ImportError, AttributeError, OSError):  # pragma: no cover - other Python implementations
        return
    run.restype = ctypes.py_object
    run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
    scope: dict[str, Any] = {"__builtins__": {}}
    run(b"None", 258, scope, scope)  # 258: Py_eval_input
