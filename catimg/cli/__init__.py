"""The command-line layer: parses arguments, calls the core, renders with Rich.

Each command lives in its own module under ``catimg.cli`` and registers itself on :data:`app`. The core never
prints and never imports Typer. Errors from :mod:`catimg.errors` become one red line and a non-zero exit code
here, in one place; ``CATIMG_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from catimg import __version__
from catimg.errors import CatimgError

app = typer.Typer(
    name="catimg",
    help=(
        "Cost-aware text-to-image generation: route each prompt to the local generator that gives the most "
        "predicted quality for your budget (CATImage, arXiv 2506.14753).\n\n"
        "Examples:\n\n"
        "  catimg gen \"a lighthouse at dusk\" --budget low\n\n"
        "  catimg gen -f prompts.txt --budget medium\n\n"
        "  catimg explain \"a colourful park with a crowd\""
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"catimg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """catimg: cost-aware routing for local text-to-image generation."""


# Command modules register themselves on `app` when imported.
from catimg.cli import commands_calibrate  # noqa: E402,F401
from catimg.cli import commands_routing  # noqa: E402,F401
from catimg.cli import commands_train  # noqa: E402,F401
from catimg.cli import commands_bench  # noqa: E402,F401
from catimg.cli import commands_gen  # noqa: E402,F401
from catimg.cli import commands_plan  # noqa: E402,F401


def main() -> None:
    """Console entry point: run the app, turning catimg errors into one line and an exit code."""
    try:
        app(standalone_mode=False)
    except CatimgError as exc:
        if os.environ.get("CATIMG_DEBUG"):
            raise
        from catimg.cli.render import error_console

        error_console().print(f"[bold red]error:[/] {exc.message}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if os.environ.get("CATIMG_DEBUG"):
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.Abort):
            print("aborted", file=sys.stderr)
            sys.exit(130)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise
