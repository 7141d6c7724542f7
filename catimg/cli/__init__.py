"""The command-line layer: parses arguments, calls the core, renders with Rich.

Each command lives in its own module under ``catimg.cli`` and registers itself on :data:`app`. The core never
prints and never imports Typer. Errors from :mod:`catimg.errors` become one red line and a non-zero exit code
here, in one place (with ``--json`` also one ``{"error": {"code", "message"}}`` object on stdout, so that
stdout is JSON whatever happens); ``CATIMG_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from catimg import interrupts

if Path(sys.argv[0]).name == "catimg" or sys.argv[0].endswith(os.path.join("catimg", "__main__.py")):
    interrupts.install()  # the command line: a Ctrl-C during the imports below is recorded, not a traceback

import typer  # noqa: E402

from catimg import __version__  # noqa: E402
from catimg.cli.lazy import LazyGroup  # noqa: E402
from catimg.errors import CatimgError, ExitStatus  # noqa: E402

app = typer.Typer(
    name="catimg",
    help=(
        "Cost-aware text-to-image generation: route each prompt to the local generator that gives the most "
        "predicted quality for your budget (CATImage, arXiv 2506.14753).\n\n"
        "Examples:\n\n"
        '  catimg gen "a lighthouse at dusk" --budget low\n\n'
        "  catimg gen -f prompts.txt --budget medium\n\n"
        '  catimg explain "a colourful park with a crowd"'
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=LazyGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"catimg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """catimg: cost-aware routing for local text-to-image generation."""


# Command modules register themselves on `app` when imported; catimg.cli.lazy imports each one when its
# command is first needed (catimg.cli.lazy.COMMANDS lists them and orders the root help), so `catimg --help`
# imports none.


def main() -> None:
    """Console entry point: run the app, turning catimg errors into one line and an exit code."""
    interrupts.install()
    try:
        _run()
    finally:
        if interrupts.requested():
            # exit with our status (130), not by CPython's own SIGINT (see catimg.interrupts)
            interrupts.settle()


def _run() -> None:
    """Parse and run one command; map catimg errors, interrupts and usage errors to one line and an exit
    status."""
    try:
        interrupts.arm()  # a Ctrl-C that came during start-up raises here
        # without standalone mode click returns (not raises) the code of `raise typer.Exit(code)`
        code = app(standalone_mode=False)
        if not (isinstance(code, int) and code):
            interrupts.check()  # a Ctrl-C swallowed on the way ("Exception ignored ...") still ends with 130
        elif code == ExitStatus.INTERRUPTED and not interrupts.reported():
            raise KeyboardInterrupt  # typer turned it into a silent exit 130: say it in one line below
    except CatimgError as exc:
        if os.environ.get("CATIMG_DEBUG"):
            raise
        from catimg.cli.render import error_console, label

        error_console().print(label("error:", "bold red", exc.message), highlight=False, soft_wrap=True)
        _json_error(int(exc.exit_code), exc.message, exc)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        if os.environ.get("CATIMG_DEBUG"):
            raise
        line = "interrupted: the command stopped before it saved anything; run it again"
        print(line, file=sys.stderr)
        _json_error(int(ExitStatus.INTERRUPTED), line)
        sys.exit(ExitStatus.INTERRUPTED)
    except SystemExit:
        raise
    except Exception as exc:  # usage errors (bad option value, unknown option) and the like
        if os.environ.get("CATIMG_DEBUG"):
            raise
        if isinstance(exc, typer.Abort) or _is_click(exc, "Abort"):
            print("aborted", file=sys.stderr)
            sys.exit(ExitStatus.INTERRUPTED)
        if isinstance(exc, typer.Exit) or _is_click(exc, "Exit"):
            sys.exit(int(getattr(exc, "exit_code", ExitStatus.ERROR)))
        if _is_click(exc, "NoArgsIsHelpError"):  # plain `catimg`: the help
            exc.show()  # type: ignore[attr-defined]
            sys.exit(int(getattr(exc, "exit_code", ExitStatus.BAD_INPUT)))
        if _is_click(exc, "ClickException"):
            sys.exit(_usage_error(exc))
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


def _json_error(code: int, message: str, exc: BaseException | None = None) -> None:
    """With ``--json``, a failed command also prints ``{"error": {"code": N, "message": "..."}}`` on stdout.

    Nothing when the command already put the error into its own JSON document (``exc.json_reported``).
    """
    args = sys.argv[1:]
    if "--" in args:
        args = args[: args.index("--")]
    if "--json" not in args or getattr(exc, "json_reported", False):
        return
    import json

    sys.stdout.write(json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _is_click(exc: BaseException, name: str) -> bool:
    """``exc`` is click's ``name`` exception: typer >= 0.20 raises its vendored copy (typer._click), older
    ones click's."""
    for mod in ("typer._click.exceptions", "click.exceptions"):
        module = sys.modules.get(mod)
        if module is None:
            try:
                import importlib

                module = importlib.import_module(mod)
            except ImportError:
                continue
        cls = getattr(module, name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def _usage_error(exc: Exception) -> int:
    """Print a usage error as one line (the option, what is wrong, where help is) and return its exit code."""
    from catimg.cli.render import error_console, label

    message = " ".join(str(getattr(exc, "format_message", lambda: str(exc))()).split()).rstrip(".")
    cause = exc.__cause__
    try:  # typer checks values with pydantic: name the value that failed
        got = cause.errors()[0]["input"] if cause is not None and hasattr(cause, "errors") else None
    except (TypeError, LookupError, ValueError):
        got = None
    if got is not None:
        message += f" (got {got!r})"
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "catimg"
    error_console().print(
        label("error:", "bold red", f"{message}; see `{path} --help`"), highlight=False, soft_wrap=True
    )
    code = int(getattr(exc, "exit_code", ExitStatus.BAD_INPUT))
    _json_error(code, f"{message}; see `{path} --help`")
    return code
