"""Nothing heavy at import time: the CLI module and `catimg --help` leave torch, diffusers and transformers
out."""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "safetensors", "ray")


def test_importing_cli_leaves_heavy_modules_unimported() -> None:
    code = (
        "import sys, catimg.cli\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at CLI import time: {out.stdout.strip()}"


def test_help_runs_without_heavy_imports() -> None:
    code = (
        "import sys\n"
        "from catimg.cli import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "catimg", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("catimg ")


def test_root_help_imports_no_command_module() -> None:
    """`catimg --help` lists every command from catimg.cli.lazy.COMMANDS: no command module, none of their
    heavy dependencies (numpy, the routing core) and not Typer's Markdown/traceback help renderer are
    imported."""
    watched = HEAVY + (
        "numpy",
        "rich.markdown",
        "rich.traceback",
        "typer.rich_utils",
        "catimg.routing.route",
        "catimg.routing.router",
    )
    code = (
        "import sys\n"
        "sys.argv = ['catimg', '--help']\n"
        "from catimg.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [m for m in sys.modules if m.startswith('catimg.cli.commands_') or m in "
        f"{watched!r}]\n"
        "print(','.join(sorted(loaded)), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert out.stderr.strip() == "", f"imported by `catimg --help`: {out.stderr.strip()}"
    from catimg.cli.lazy import COMMANDS

    for name in COMMANDS:  # every command is listed, with its summary, though none was imported
        assert f" {name} " in out.stdout
    assert "catimg gen -f prompts.txt --budget medium" in out.stdout


def test_lazy_command_summaries_match_their_help() -> None:
    """The root help's one-liners (catimg.cli.lazy.COMMANDS) are the first paragraph of each command's own
    help."""
    import inspect

    import typer.main

    from catimg.cli import app
    from catimg.cli.lazy import COMMANDS, load_command

    for name, entry in COMMANDS.items():
        command = load_command(app, name)
        assert command is not None and command.name == name
        first = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
        assert first == entry.summary, name
    assert typer.main.get_command(app).list_commands(None) == list(COMMANDS)  # type: ignore[attr-defined]
