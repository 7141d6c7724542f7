"""Run the real ``catimg`` entry point in-process: ``run_cli(*args) -> (exit code, stdout, stderr)``.

``run_cli`` calls :func:`catimg.cli.main` (the console script) with ``sys.argv`` set to ``catimg ARGS``, the
standard streams captured and a plain ``__main__`` (as under the installed ``catimg`` script, so that usage
hints say ``catimg``, not ``python -m pytest``), and turns its ``SystemExit`` into the exit code as the
interpreter would. So
the mapping of errors to exit codes and to the one red line is the product's own, never re-implemented here;
an exception that escapes ``main()`` (a bug: a traceback for the user) propagates and fails the test.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import types


def run_cli(*args: str | os.PathLike[str], stdin: str = "") -> tuple[int, str, str]:
    """``catimg ARGS`` through ``catimg.cli.main()``: (exit code, stdout, stderr). ``stdin`` is what it
    reads."""
    from catimg.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_stdin, saved_main = sys.argv, sys.stdin, sys.modules["__main__"]
    sys.argv = ["catimg", *(os.fspath(a) for a in args)]
    sys.stdin = io.StringIO(stdin)
    sys.modules["__main__"] = types.ModuleType("__main__")  # what the console script runs as
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:  # what the interpreter does with sys.exit(...)
                if exc.code is None:
                    code = 0
                elif isinstance(exc.code, int):
                    code = int(exc.code)
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
    finally:
        sys.argv, sys.stdin, sys.modules["__main__"] = saved_argv, saved_stdin, saved_main
    return code, out.getvalue(), err.getvalue()
